"""Pure geometry: distances, bearings, boxes, the ETA model and simulated routes."""

from __future__ import annotations

import itertools
import random

import pytest

from geo.distance import bbox_around, bbox_center_and_size, bearing_deg, destination, haversine_m, in_bbox
from geo.eta import DETOUR_FACTOR, eta_between, eta_seconds
from geo.simulation import DEMO_CENTER, DEMO_RADIUS_M, Mover, grid_route, random_point


def test_haversine_matches_known_distances() -> None:
    # Bengaluru MG Road to Kempegowda airport: about 29.5 km as the crow flies.
    assert haversine_m(12.9716, 77.5946, 13.1986, 77.7066) == pytest.approx(27_900, rel=0.03)
    assert haversine_m(0, 0, 0, 1) == pytest.approx(111_195, rel=1e-3)
    assert haversine_m(12.97, 77.59, 12.97, 77.59) == 0


def test_bearing_and_destination_are_inverse() -> None:
    lat, lng = destination(12.97, 77.59, 60.0, 5_000)
    assert haversine_m(12.97, 77.59, lat, lng) == pytest.approx(5_000, rel=1e-6)
    assert bearing_deg(12.97, 77.59, lat, lng) == pytest.approx(60.0, abs=0.01)
    assert bearing_deg(0, 0, 1, 0) == pytest.approx(0.0)
    assert bearing_deg(0, 0, 0, -1) == pytest.approx(270.0)


def test_bbox_around_contains_the_circle_and_sizes_round_trip() -> None:
    box = bbox_around(12.97, 77.59, 2_000)
    for bearing in range(0, 360, 15):
        assert in_bbox(*destination(12.97, 77.59, bearing, 1_990), box)
    assert not in_bbox(*destination(12.97, 77.59, 0, 2_100), box)
    _, _, width, height = bbox_center_and_size(box)
    assert width == pytest.approx(4_000, rel=0.01) and height == pytest.approx(4_000, rel=0.01)


def test_eta_depends_on_vehicle_and_detour() -> None:
    assert eta_seconds(1_000, "bike") == round(1_000 * DETOUR_FACTOR / 6.0)
    assert eta_seconds(1_000, "truck") > eta_seconds(1_000, "car")
    assert eta_seconds(1_000, "hovercraft") == eta_seconds(1_000, None)
    assert eta_between(12.97, 77.59, 12.97, 77.59) == 0


def test_simulated_movers_stay_in_the_city_and_move_at_plausible_speeds() -> None:
    rng = random.Random(7)
    mover = Mover(*random_point(DEMO_CENTER, DEMO_RADIUS_M, rng), vehicle_type="car", rng=rng)
    previous = (mover.lat, mover.lng)
    for _ in range(600):
        mover.wander()
        lat, lng = mover.step(5.0)
        assert haversine_m(*previous, lat, lng) <= 5.0 * 83
        assert haversine_m(*DEMO_CENTER, lat, lng) <= DEMO_RADIUS_M * 1.5
        previous = (lat, lng)
    target = destination(*DEMO_CENTER, 200, 3_000)
    mover.go_to(*target)
    for _ in range(2_000):
        if mover.arrived():
            break
        mover.step(5.0)
    assert mover.arrived() and haversine_m(mover.lat, mover.lng, *target) < 1.0


def test_grid_routes_move_along_one_axis_at_a_time() -> None:
    route = grid_route(12.95, 77.57, 12.99, 77.61, random.Random(1))
    points = [(12.95, 77.57), *route]
    for (lat1, lng1), (lat2, lng2) in itertools.pairwise(points[:-1]):
        assert lat1 == lat2 or lng1 == lng2
    assert route[-1] == (12.99, 77.61)
