"""Resource tags: key-value labels on a workspace's resources (Pinpoint's TagResource, UntagResource,
ListTagsForResource and the `tags` of its create bodies). A resource is named within its workspace:
"app" (the workspace itself), "segments/<id>", "templates/<name>/<TYPE>". Tags are metadata only:
nothing in Tidings reads them. Pinpoint's limits apply: 50 tags per resource, keys 1-128 characters not
starting with "aws:", values up to 256 characters."""
from __future__ import annotations

from sqlalchemy import Connection, Engine, delete, select, update

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.workspaces.tables import resource_tags

MAX_TAGS = 50
MAX_KEY = 128
MAX_VALUE = 256


def check_tags(tags: dict[str, str], field: str = "tags") -> None:
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_KEY:
            raise InvalidInput(f"tag keys are 1-{MAX_KEY} characters, got {key!r}", field=f"{field}.{key}")
        if key.lower().startswith("aws:"):
            raise InvalidInput(f"tag keys starting with 'aws:' are reserved, got {key!r}", field=f"{field}.{key}")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise InvalidInput(f"tag values are strings of at most {MAX_VALUE} characters", field=f"{field}.{key}")


def get_tags(db: Engine, workspace_id: int, resource: str) -> dict[str, str]:
    with reading(db) as conn:
        return tags_of(conn, workspace_id, [resource]).get(resource, {})


def tags_for(db: Engine, workspace_id: int, resources: list[str]) -> dict[str, dict[str, str]]:
    with reading(db) as conn:
        return tags_of(conn, workspace_id, resources)


def tags_of(conn: Connection, workspace_id: int, resources: list[str]) -> dict[str, dict[str, str]]:
    """The tags of each of `resources` that has any."""
    if not resources:
        return {}
    rows = conn.execute(select(resource_tags.c.resource, resource_tags.c.tags).where(
        resource_tags.c.workspace_id == workspace_id, resource_tags.c.resource.in_(list(set(resources))))).all()
    return {r.resource: dict(r.tags) for r in rows}


def add_tags(conn: Connection, workspace_id: int, resource: str, tags: dict[str, str], field: str = "tags") -> None:
    """Add or overwrite `tags` on `resource`, in the caller's write transaction (so a resource and its tags
    are created together)."""
    check_tags(tags, field)
    row = conn.execute(select(resource_tags.c.tags).where(resource_tags.c.workspace_id == workspace_id,
                                                          resource_tags.c.resource == resource)).first()
    merged = {**(dict(row.tags) if row else {}), **tags}
    if len(merged) > MAX_TAGS:
        raise InvalidInput(f"a resource has at most {MAX_TAGS} tags ({len(merged)} with these)", field=field)
    if row is None:
        conn.execute(resource_tags.insert().values(workspace_id=workspace_id, resource=resource, tags=merged,
                                                   updated_at=now_ms()))
    else:
        conn.execute(update(resource_tags).where(resource_tags.c.workspace_id == workspace_id,
                                                 resource_tags.c.resource == resource)
                     .values(tags=merged, updated_at=now_ms()))


def tag(db: Engine, workspace_id: int, resource: str, tags: dict[str, str], field: str = "tags") -> None:
    with writing(db) as conn:
        add_tags(conn, workspace_id, resource, tags, field)


def untag(db: Engine, workspace_id: int, resource: str, keys: list[str]) -> None:
    """Remove `keys` from `resource`'s tags (keys it does not have are ignored, as in Pinpoint)."""
    with writing(db) as conn:
        row = conn.execute(select(resource_tags.c.tags).where(resource_tags.c.workspace_id == workspace_id,
                                                              resource_tags.c.resource == resource)).first()
        if row is None:
            return
        left = {k: v for k, v in dict(row.tags).items() if k not in set(keys)}
        where = (resource_tags.c.workspace_id == workspace_id, resource_tags.c.resource == resource)
        if left:
            conn.execute(update(resource_tags).where(*where).values(tags=left, updated_at=now_ms()))
        else:
            conn.execute(delete(resource_tags).where(*where))


def drop_tags(conn: Connection, workspace_id: int, resource_prefix: str) -> None:
    """Forget the tags of a deleted resource (in the transaction that deletes it), and of anything named
    under it when `resource_prefix` ends with "/" ("templates/welcome/" drops every type's)."""
    where = (resource_tags.c.resource.startswith(resource_prefix, autoescape=True)
             if resource_prefix.endswith("/") else resource_tags.c.resource == resource_prefix)
    conn.execute(delete(resource_tags).where(resource_tags.c.workspace_id == workspace_id, where))


__all__ = ["check_tags", "get_tags", "tags_for", "tags_of", "add_tags", "tag", "untag", "drop_tags", "MAX_TAGS"]
