// Camera math: continuous camera <-> the 96 poses of GET /v1/poses <-> a point on the sphere around the
// subject. The snapping rules mirror reangle/core/camera.py (the studio's tests check they agree).
//
// Scene axes: y is up and the subject faces +z (the front camera sits on +z), so the subject's right
// hand is on -x. Azimuth grows clockwise seen from above, as in camera.py: 90 is the camera on the
// subject's right ("right side view"), 270 on its left.

export const ZOOM_DEFAULT = 5;
export const VERTICAL_LIMIT = 90;
export const ZOOM_LIMIT = 10;

// Bands of the continuous axes, as camera.py's _ELEVATION_BANDS and _ZOOM_BANDS: a value below the bound
// gets that entry, a value on a bound the next one.
const ELEVATION_BANDS = [[-15, -30], [15, 0], [45, 30]];
const ELEVATION_TOP = 60;
const ZOOM_BANDS = [[2, 2], [6, 1]]; // zoom -> distance rank (0 close-up, 1 medium shot, 2 wide shot)
const ZOOM_TOP = 0;
// Where a snap point of each distance rank sits on the zoom axis (inside its band).
const ZOOM_OF_RANK = [8, 5, 1];
// The API's distance factor -> distance rank, as camera.py's _FACTOR_BANDS: (0, 0.8) close-up,
// [0.8, 1.6) medium shot, [1.6, 10] wide shot.
const FACTOR_BANDS = [[0.8, 0], [1.6, 1]];
const FACTOR_TOP = 2;
// The sphere's radius in scene units at zoom 0 (wide) and zoom 10 (close-up); the card is ~1.6 units high.
const RADIUS_WIDE = 3.0;
const RADIUS_CLOSE = 1.35;

export function wrapDegrees(degrees) {
  return ((degrees % 360) + 360) % 360;
}

export function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

/** The nearest of the 8 azimuths; a value on a sector boundary goes clockwise (22.5 -> 45, 337.5 -> 0). */
export function snapAzimuth(horizontal) {
  const degrees = wrapDegrees(horizontal);
  const sector = Math.floor(degrees / 45);
  const within = degrees - sector * 45;
  return ((sector + (within >= 22.5 ? 1 : 0)) % 8) * 45;
}

function band(value, bands, top) {
  for (const [upper, result] of bands) if (value < upper) return result;
  return top;
}

export function snapElevation(vertical) {
  return band(vertical, ELEVATION_BANDS, ELEVATION_TOP);
}

export function distanceRank(zoom) {
  return band(zoom, ZOOM_BANDS, ZOOM_TOP);
}

/** The zoom of the snap point for an API distance factor (`distance`: 0.6 close-up, 1 medium, 1.8 wide). */
export function zoomOfDistance(distance) {
  return ZOOM_OF_RANK[band(distance, FACTOR_BANDS, FACTOR_TOP)];
}

export function radiusOf(zoom) {
  return RADIUS_WIDE + (RADIUS_CLOSE - RADIUS_WIDE) * (clamp(zoom, 0, ZOOM_LIMIT) / ZOOM_LIMIT);
}

export function zoomOf(radius) {
  return clamp(((radius - RADIUS_WIDE) / (RADIUS_CLOSE - RADIUS_WIDE)) * ZOOM_LIMIT, 0, ZOOM_LIMIT);
}

/** The point on the sphere for a camera, as [x, y, z]. */
export function positionOf({ horizontal, vertical, zoom }) {
  const h = (horizontal * Math.PI) / 180;
  const v = (clamp(vertical, -89.9, 89.9) * Math.PI) / 180;
  const r = radiusOf(zoom);
  return [-Math.sin(h) * Math.cos(v) * r, Math.sin(v) * r, Math.cos(h) * Math.cos(v) * r];
}

/** The camera at a point of the scene: horizontal in [0, 360), vertical in [-90, 90], zoom in [0, 10]. */
export function cameraAt([x, y, z]) {
  const r = Math.hypot(x, y, z);
  const horizontal = wrapDegrees((Math.atan2(-x, z) * 180) / Math.PI);
  const vertical = (Math.asin(clamp(y / r, -1, 1)) * 180) / Math.PI;
  return { horizontal, vertical, zoom: zoomOf(r) };
}

/** The pose table of GET /v1/poses, with the lookups the page needs. */
export class PoseTable {
  constructor(entries) {
    // camera.py lists the poses by azimuth, then elevation, then distance factor, ascending: within one
    // azimuth and elevation the three distances come close-up, medium shot, wide shot.
    if (entries.length !== 96) throw new Error(`expected 96 poses from /v1/poses, got ${entries.length}`);
    this.entries = entries.map((entry, index) => ({ ...entry, rank: index % 3 }));
    this.byKey = new Map(this.entries.map((e) => [key(e.azimuth_deg, e.elevation_deg, e.rank), e]));
    if (this.byKey.size !== 96) throw new Error("the pose table from /v1/poses has repeated poses");
  }

  /** The pose the server makes of these continuous values (what `reangle pose` prints). */
  nearest(camera) {
    const found = this.byKey.get(
      key(snapAzimuth(camera.horizontal), snapElevation(camera.vertical), distanceRank(camera.zoom)),
    );
    if (!found) throw new Error("no pose for this camera");
    return found;
  }

  /** The continuous values that sit on a pose's snap point. */
  cameraOf(entry) {
    return { horizontal: entry.azimuth_deg, vertical: entry.elevation_deg, zoom: ZOOM_OF_RANK[entry.rank] };
  }
}

function key(azimuth, elevation, rank) {
  return `${azimuth}/${elevation}/${rank}`;
}

/** Round for display and requests: at most 2 decimals. */
export function round(value) {
  return Math.round(value * 100) / 100;
}
