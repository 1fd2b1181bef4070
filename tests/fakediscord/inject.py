"""Users' actions, sent to the bot as real INTERACTION_CREATE dispatches with full payloads."""

from __future__ import annotations

import fnmatch
import mimetypes
import secrets
from typing import TYPE_CHECKING, Any

from .models import Attachment, Channel, Guild, Message, P, Role, User, snowflake
from .records import Interaction

if TYPE_CHECKING:
    from .server import FakeDiscord

# application command option types
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
)


def _infer_type(value: Any) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, User):
        return USER
    if isinstance(value, Channel):
        return CHANNEL
    if isinstance(value, Role):
        return ROLE
    if isinstance(value, Attachment):
        return ATTACHMENT
    return STRING


class InjectMixin:
    """Methods of FakeDiscord that play a user's part."""

    def upload(
        self: FakeDiscord,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        declared_size: int | None = None,
    ) -> Attachment:
        """A file a user attached to a slash-command option (type 11); served from the fake CDN.
        `declared_size`: the size Discord's payload claims, when it should differ from the bytes."""
        aid = snowflake()
        att = Attachment(
            aid,
            filename,
            data,
            f"{self.base_url}/attachments/0/{aid}/{filename}",
            content_type or mimetypes.guess_type(filename)[0],
            ephemeral=True,
            declared_size=declared_size,
        )
        self._uploads[aid] = att
        return att

    def post(
        self: FakeDiscord,
        content: str = "",
        *,
        files: list[tuple[str, bytes]] = (),
        user: User | None = None,
        channel: Channel | None = None,
    ) -> Message:
        """A message a member posts (with `files` as (filename, bytes)): a target for message commands."""
        user, channel = self._where(user, channel)
        msg = Message(snowflake(), channel, user, content=content)
        msg.attachments = [
            Attachment(
                aid, name, data, f"{self.base_url}/attachments/{channel.id}/{aid}/{name}", mimetypes.guess_type(name)[0]
            )
            for aid, (name, data) in ((snowflake(), f) for f in files)
        ]
        self.messages[msg.id] = msg
        return msg

    # ---- payload pieces ----------------------------------------------------------------------
    def _conforming(self: FakeDiscord, schema: str, payload: dict[str, Any]) -> dict[str, Any]:
        """`payload`, after checking it against the spec's `schema`: the fake must not send what Discord never would."""
        # Stored components echo what the bot sent; Discord's answers add numeric ids the fake does not invent.
        checked = {**payload, "components": []} if "components" in payload else payload
        problems = self.spec.validate_object(schema, checked)
        if problems:
            raise AssertionError(f"the fake built a {schema} that Discord's spec rejects: {problems}")
        return payload

    def _base_payload(self: FakeDiscord, itype: int, user: User, channel: Channel) -> dict[str, Any]:
        guild = channel.guild
        payload: dict[str, Any] = {
            "id": str(snowflake()),
            "application_id": str(self.application_id),
            "type": itype,
            "token": "ixt." + secrets.token_urlsafe(48),
            "version": 1,
            "channel_id": str(channel.id),
            "channel": channel.to_payload(),
            "locale": user.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.attachment_size_limit,
        }
        if guild is not None:
            member = guild.member(user)
            bot = guild.member(self.bot_user)
            if not member.permissions_in(channel) & P.VIEW_CHANNEL:
                raise AssertionError(f"{user.username} cannot see #{channel.name}: no client offers that")
            payload.update(
                guild_id=str(guild.id),
                guild=guild.to_partial(),
                guild_locale=guild.locale,
                member={**member.to_payload(), "permissions": str(member.permissions_in(channel))},
                app_permissions=str(bot.permissions_in(channel)),
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
            )
            payload["channel"]["permissions"] = str(member.permissions_in(channel))
        else:
            payload.update(
                user=user.to_payload(),
                app_permissions=str(P.EVERYONE & ~P.MANAGE_MESSAGES),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        return payload

    async def _send(
        self: FakeDiscord,
        itype: int,
        payload: dict[str, Any],
        user: User,
        channel: Channel,
        message: Message | None = None,
    ) -> Interaction:
        if not any(s.identified for s in self._sessions):
            raise AssertionError("no bot is connected to the fake gateway; use `async with fake.running(bot)`")
        ix = Interaction(
            self, type=itype, payload=payload, user=user, channel=channel, guild=channel.guild, message=message
        )
        self.interactions[ix.id] = ix
        self._by_token[ix.token] = ix
        await self.dispatch("INTERACTION_CREATE", payload)
        return ix

    def _where(self: FakeDiscord, user: User | None, channel: Channel | None) -> tuple[User, Channel]:
        user = user or self.alice
        channel = channel or self.channel
        if channel.guild is not None:
            channel.guild.member(user)  # raises if not a member
        return user, channel

    def _option(
        self: FakeDiscord, name: str, value: Any, otype: int, resolved: dict[str, Any], channel: Channel
    ) -> dict[str, Any]:
        guild = channel.guild
        if otype in (USER, MENTIONABLE) and isinstance(value, User):
            resolved.setdefault("users", {})[str(value.id)] = value.to_payload()
            if guild is not None and value.id in guild.members:
                m = guild.members[value.id]
                resolved.setdefault("members", {})[str(value.id)] = {
                    **m.to_payload(with_user=False),
                    "permissions": str(m.permissions),
                }
            return {"name": name, "type": otype, "value": str(value.id)}
        if otype in (ROLE, MENTIONABLE) and isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.to_payload()
            return {"name": name, "type": otype, "value": str(value.id)}
        if otype == CHANNEL:
            assert isinstance(value, Channel), f"option {name!r} takes a Channel, got {value!r}"
            ch = value.to_payload()
            if guild is not None:
                ch["permissions"] = str(P.ALL)
            resolved.setdefault("channels", {})[str(value.id)] = ch
            return {"name": name, "type": otype, "value": str(value.id)}
        if otype == ATTACHMENT:
            assert isinstance(value, Attachment), f"option {name!r} takes fake.upload(...), got {value!r}"
            resolved.setdefault("attachments", {})[str(value.id)] = self._conforming(
                "MessageAttachmentResponse", value.to_payload()
            )
            return {"name": name, "type": otype, "value": str(value.id)}
        if otype == INTEGER:
            assert isinstance(value, int) and not isinstance(value, bool), f"option {name!r} takes an int"
        elif otype == NUMBER:
            assert isinstance(value, int | float) and not isinstance(value, bool), f"option {name!r} takes a number"
            value = float(value)
        elif otype == BOOLEAN:
            assert isinstance(value, bool), f"option {name!r} takes a bool"
        elif otype == STRING:
            assert isinstance(value, str), f"option {name!r} takes a str, got {value!r}"
        return {"name": name, "type": otype, "value": value}

    def _command_data(
        self: FakeDiscord,
        name: str,
        options: dict[str, Any],
        channel: Channel,
        *,
        focused: str | None = None,
        ctype: int = 1,
    ) -> dict[str, Any]:
        path = name.split() if ctype == 1 else [name]  # context menu names may hold spaces ("Upscale 2x")
        definition = self.find_command(path[0], guild=channel.guild, type=ctype)
        if definition is not None:
            context = 0 if channel.guild is not None else 1
            contexts = definition.get("contexts")
            if (contexts is not None and context not in contexts) or (
                context == 1 and definition.get("dm_permission") is False
            ):
                raise AssertionError(
                    f"Discord would not offer /{path[0]} in a {'guild' if context == 0 else 'DM'}"
                    f" (contexts={contexts}, dm_permission={definition.get('dm_permission')})"
                )
        resolved: dict[str, Any] = {}
        data: dict[str, Any] = {
            "id": definition["id"] if definition else str(snowflake()),
            "name": path[0],
            "type": ctype,
        }
        if channel.guild is not None:
            data["guild_id"] = str(channel.guild.id)
        # walk subcommand groups/subcommands
        defs = definition.get("options") or [] if definition else None
        container = data
        for part in path[1:]:
            node_def = next((o for o in defs or [] if o["name"] == part), None) if defs is not None else None
            if defs is not None and node_def is None:
                raise AssertionError(f"/{name}: no subcommand {part!r}; has {[o['name'] for o in defs]}")
            otype = node_def["type"] if node_def else (SUB_COMMAND if part == path[-1] else SUB_COMMAND_GROUP)
            node = {"name": part, "type": otype, "options": []}
            container.setdefault("options", []).append(node)
            container = node
            defs = node_def.get("options") or [] if node_def else None
        opts = container.setdefault("options", [])
        if defs is not None:
            known = {o["name"]: o for o in defs}
            unknown = set(options) - set(known)
            if unknown:
                raise AssertionError(f"/{name} has no option(s) {sorted(unknown)}; options: {sorted(known)}")
            missing = [
                o["name"]
                for o in defs
                if o.get("required") and o["name"] not in options and o["type"] > SUB_COMMAND_GROUP and focused is None
            ]
            if missing:
                raise AssertionError(f"/{name} needs required option(s) {missing} (Discord's client insists)")
        for key, value in options.items():
            otype = known[key]["type"] if defs is not None else _infer_type(value)
            if key == focused:
                opts.append({"name": key, "type": otype, "value": str(value), "focused": True})
            else:
                opts.append(self._option(key, value, otype, resolved, channel))
        if resolved:
            data["resolved"] = resolved
        return data

    # ---- the actions ---------------------------------------------------------------------------
    async def slash(
        self: FakeDiscord, name: str, *, user: User | None = None, channel: Channel | None = None, **options: Any
    ) -> Interaction:
        """Run `/name` (use "group sub" for subcommands) with options as keyword arguments.
        Option types come from the commands the bot synced; unsynced commands infer them from Python types."""
        user, channel = self._where(user, channel)
        payload = self._base_payload(2, user, channel)
        payload["data"] = self._command_data(name, options, channel)
        return await self._send(2, payload, user, channel)

    async def context_menu(
        self: FakeDiscord,
        name: str,
        target: Message | User,
        *,
        user: User | None = None,
        channel: Channel | None = None,
    ) -> Interaction:
        user, channel = self._where(user, channel)
        ctype = 3 if isinstance(target, Message) else 2
        payload = self._base_payload(2, user, channel)
        data = self._command_data(name, {}, channel, ctype=ctype)
        data["target_id"] = str(target.id)
        if isinstance(target, Message):
            data["resolved"] = {"messages": {str(target.id): self._conforming("MessageResponse", target.to_payload())}}
        else:
            data["resolved"] = {"users": {str(target.id): target.to_payload()}}
        payload["data"] = data
        return await self._send(2, payload, user, channel)

    async def autocomplete(
        self: FakeDiscord,
        name: str,
        focused: str,
        *,
        user: User | None = None,
        channel: Channel | None = None,
        **options: Any,
    ) -> Interaction:
        """The user typing into option `focused` (its partial text among `options`); see ix.wait_for_choices()."""
        user, channel = self._where(user, channel)
        options.setdefault(focused, "")
        payload = self._base_payload(4, user, channel)
        payload["data"] = self._command_data(name, options, channel, focused=focused)
        return await self._send(4, payload, user, channel)

    def find_component(
        self: FakeDiscord, message: Message, custom_id: str | None = None, *, label: str | None = None
    ) -> dict[str, Any]:
        """A button/select on `message` by custom_id (glob patterns allowed, e.g. "dg:u:*:1") or label."""
        for c in message.buttons:
            if custom_id is not None and fnmatch.fnmatchcase(c.get("custom_id", ""), custom_id):
                return c
            if label is not None and c.get("label") == label:
                return c
        raise AssertionError(
            f"no component {custom_id or label!r} on {message!r}; it has "
            f"{[(c.get('label'), c.get('custom_id')) for c in message.buttons]}"
        )

    async def click(
        self: FakeDiscord,
        message: Message,
        custom_id: str | None = None,
        *,
        label: str | None = None,
        user: User | None = None,
        values: list[Any] | None = None,
    ) -> Interaction:
        """Click a button (or pick `values` in a select menu) on `message`, as `user` (default alice)."""
        if message.deleted:
            raise AssertionError(f"{message!r} was deleted")
        comp = self.find_component(message, custom_id, label=label)
        if comp.get("disabled"):
            raise AssertionError(f"component {comp.get('label') or comp['custom_id']!r} is disabled")
        if comp.get("style") in (5, 6) or "custom_id" not in comp:
            raise AssertionError("link/premium buttons do not send interactions")
        user, channel = self._where(user, message.channel)
        payload = self._base_payload(3, user, channel)
        data: dict[str, Any] = {"custom_id": comp["custom_id"], "component_type": comp["type"]}
        if comp["type"] != 2:
            values = list(values or [])
            data["values"] = [str(v.id) if hasattr(v, "id") else v for v in values]
            resolved: dict[str, Any] = {}
            for v in values:
                if not isinstance(v, str):
                    self._option(
                        "v",
                        v,
                        {5: USER, 6: ROLE, 7: MENTIONABLE, 8: CHANNEL}[comp["type"]]
                        if not (comp["type"] == 7 and isinstance(v, Role))
                        else ROLE,
                        resolved,
                        channel,
                    )
            if resolved:
                data["resolved"] = resolved
        elif values:
            raise AssertionError("buttons take no values")
        payload["data"] = data
        payload["message"] = message.to_payload()
        return await self._send(3, payload, user, channel, message=message)

    async def select(
        self: FakeDiscord, message: Message, custom_id: str, values: list[Any], *, user: User | None = None
    ) -> Interaction:
        return await self.click(message, custom_id, values=values, user=user)

    async def submit_modal(
        self: FakeDiscord, opened_by: Interaction, values: dict[str, str] | None = None, *, user: User | None = None
    ) -> Interaction:
        """Fill in and submit the modal the bot opened in answer to `opened_by`.
        `values` maps text-input custom_ids to text; inputs left out keep their pre-filled value."""
        modal = opened_by.modal
        if modal is None:
            raise AssertionError(f"{opened_by!r} did not open a modal (callback: {opened_by.callback})")
        values = dict(values or {})
        user = user or opened_by.user
        channel = opened_by.channel

        def answer(c: dict[str, Any]) -> dict[str, Any]:
            cid = c.get("custom_id")
            if c["type"] == 4:
                value = values.pop(cid, c.get("value") or "")
                if c.get("required", True) and not value:
                    raise AssertionError(f"modal input {cid!r} is required (Discord's client would not submit)")
                if c.get("max_length") and len(value) > c["max_length"]:
                    raise AssertionError(f"modal input {cid!r} takes at most {c['max_length']} characters")
                return {"type": 4, "id": c.get("id", 0), "custom_id": cid, "value": value}
            if c["type"] in (3, 5, 6, 7, 8):
                picked = values.pop(cid, [])
                return {
                    "type": c["type"],
                    "id": c.get("id", 0),
                    "custom_id": cid,
                    "values": [str(getattr(v, "id", v)) for v in picked],
                }
            return {"type": c["type"], "id": c.get("id", 0)}

        components = []
        for top in modal.get("components", []):
            if top["type"] == 1:
                components.append(
                    {"type": 1, "id": top.get("id", 0), "components": [answer(c) for c in top.get("components", [])]}
                )
            elif top["type"] == 18:
                components.append({"type": 18, "id": top.get("id", 0), "component": answer(top["component"])})
            else:
                components.append({"type": top["type"], "id": top.get("id", 0)})
        if values:
            raise AssertionError(f"modal has no inputs {sorted(values)}")
        payload = self._base_payload(5, user, channel)
        payload["data"] = {"custom_id": modal["custom_id"], "components": components}
        message = opened_by.message
        if message is not None:
            payload["message"] = message.to_payload()
        return await self._send(5, payload, user, channel, message=message)


__all__ = ["InjectMixin", "Guild"]
