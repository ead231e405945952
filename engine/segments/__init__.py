"""Segments: dynamic (JsonLogic rules kept current on every write) and static (imported).

What other parts of Tidings call:
  segment_exists(conn_or_db, ws_id, id), is_member(conn, ws_id, id, user_pk), members(db, ws_id, id)
  segment_in_use_by(conn, ws_id, id), apply_segment_resource(db, ws, doc)
  member_pks / members_among / set_journey_refs (journeys' audience), put_static_segment (test harnesses)
"""
from tidings.engine.segments.service import (  # noqa: F401
    apply_segment_resource, is_member, members, segment_exists, segment_in_use_by,
)
