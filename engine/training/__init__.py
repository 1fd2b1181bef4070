"""Training and evaluation of dreamgrid-tiny, the project's own offline text-to-image model."""
