"""Pinpoint journeys: their JSON (WriteJourneyRequest / JourneyResponse) as Tidings journey YAML (to_yaml), and a
stored journey's IR back as JourneyResponse members (to_pinpoint). Used by the Pinpoint API (api/pinpoint/journeys.py)
and by `tidings pinpoint convert`."""
from tidings.engine.journeys.pinpoint.to_pinpoint import journey_parts
from tidings.engine.journeys.pinpoint.to_yaml import journey_document, journey_yaml

__all__ = ["journey_document", "journey_parts", "journey_yaml"]
