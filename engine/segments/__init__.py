"""Segments: dynamic (JsonLogic rules kept current on every write) and static (imported).

What other parts of Tidings call:
  segment_exists(conn_or_db, workspace_id, id), is_member(conn, workspace_id, id, user_pk), members(db, workspace_id, id)
  segment_in_use_by(conn, workspace_id, id), apply_segment_resource(db, workspace, doc)
  member_pks / members_among / set_journey_refs (journeys' audience), put_static_segment (test harnesses)
"""
from tidings.engine.segments.service import (  # noqa: F401
    apply_segment_resource, is_member, members, segment_exists, segment_in_use_by,
)
