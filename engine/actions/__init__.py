"""One module per action; each reads like a diffusers `__call__` (check inputs, encode, ..., decode).

Every action takes a *batch* of compatible requests (same size, steps, guidance, strength,
tile, stop — see `RenderRequest.batch_key`) and returns one list of images per request.
"""
