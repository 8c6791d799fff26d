"""Pure geometry: distances, bounding boxes, ETAs, service areas and route simulation. No I/O."""
