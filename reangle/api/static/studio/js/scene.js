// The 3D view: the image as a card, the camera on its sphere, the 96 poses as snap points. It only draws and
// reports pointer gestures; the camera values live in the page (controls.js) and come back via setCamera.
import * as THREE from "../vendor/three-0.180.0/three.module.min.js";
import { clamp, positionOf, radiusOf } from "./camera.js";

const CARD_HEIGHT = 1.5;
const CARD_MAX_WIDTH = 2.4; // a wide image is made lower instead: it stays inside the nearest camera sphere
const VIEWER_DISTANCE = 9.6;
const GROUND_Y = -1.1;
const PICK_RADIUS_PX = 32; // how near the camera model a press must be to grab it
const CLICK_SLOP_PX = 5;
const STRAIGHT_DRAG = 0.36; // a drag within 20 degrees (tan 20 = 0.36) of sideways or up-down moves one axis
const VIEW_DEGREES_PER_PX = 0.35;
const VIEW_START = { horizontal: 35, vertical: 24 }; // where the person looks from at first: front-right, above
const WHEEL_ZOOM_PER_PX = 0.005; // one 100-pixel notch: half a zoom step
const COLORS = { point: 0x7d8aa3, nearest: 0xffb020, path: 0x3ec7a0, camera: 0xf05a7e, ring: 0x4b9cff };

/**
 * handlers: onDrag({horizontal, vertical}), onRelease(), onZoom(delta), onPick(entry).
 * Throws when the browser has no WebGL: the caller then shows the sliders alone.
 */
export function createScene(canvas, handlers) {
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x161a22);
  const viewer = new THREE.PerspectiveCamera(40, 1, 0.1, 100);
  const view = { ...VIEW_START };
  const state = { camera: { horizontal: 0, vertical: 0, zoom: 5 }, nearest: null, path: [] };

  scene.add(new THREE.GridHelper(10, 20, 0x2e3647, 0x232a38).translateY(GROUND_Y));
  const card = makeCard();
  scene.add(card.group);
  const rig = makeCameraModel();
  scene.add(rig);
  const ring = new THREE.LineLoop(circleGeometry(1, 96), new THREE.LineBasicMaterial({ color: COLORS.ring }));
  scene.add(ring);
  const distanceLine = new THREE.Line(
    new THREE.BufferGeometry().setFromPoints([new THREE.Vector3(), new THREE.Vector3()]),
    new THREE.LineDashedMaterial({ color: COLORS.camera, dashSize: 0.08, gapSize: 0.06 }),
  );
  scene.add(distanceLine);
  const points = new THREE.Group();
  scene.add(points);
  let pointMeshes = [];

  let frame = 0;
  function draw() {
    frame = 0;
    renderer.render(scene, viewer);
  }
  function redraw() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function placeViewer() {
    const [x, y, z] = positionOf({ ...view, zoom: 0 }).map((c) => (c * VIEWER_DISTANCE) / radiusOf(0));
    viewer.position.set(x, y + 0.1, z);
    viewer.lookAt(0, 0.1, 0);
    redraw();
  }

  function resize() {
    const { clientWidth: width, clientHeight: height } = canvas;
    if (!width || !height) return;
    renderer.setSize(width, height, false);
    viewer.aspect = width / height;
    viewer.updateProjectionMatrix();
    redraw();
  }
  new ResizeObserver(resize).observe(canvas);

  function setCamera(camera, nearest) {
    state.camera = { ...camera };
    state.nearest = nearest;
    const position = new THREE.Vector3(...positionOf(camera));
    rig.position.copy(position);
    rig.lookAt(0, 0, 0);
    const radius = radiusOf(camera.zoom);
    const latitude = clamp(camera.vertical, -89.9, 89.9) * (Math.PI / 180);
    ring.scale.setScalar(radius * Math.cos(latitude));
    ring.position.y = radius * Math.sin(latitude);
    distanceLine.geometry.setFromPoints([new THREE.Vector3(), position]);
    distanceLine.computeLineDistances();
    paintPoints();
    redraw();
  }

  function setSnapPoints(entries, cameraOf) {
    points.clear();
    const geometry = new THREE.SphereGeometry(0.045, 10, 8);
    pointMeshes = entries.map((entry) => {
      const mesh = new THREE.Mesh(geometry, new THREE.MeshBasicMaterial({ color: COLORS.point }));
      mesh.position.set(...positionOf(cameraOf(entry)));
      mesh.userData.entry = entry;
      points.add(mesh);
      return mesh;
    });
    paintPoints();
  }

  function setPath(entries) {
    state.path = entries;
    paintPoints();
    redraw();
  }

  function paintPoints() {
    for (const mesh of pointMeshes) {
      const entry = mesh.userData.entry;
      const isNearest = entry === state.nearest;
      const onPath = state.path.includes(entry);
      mesh.material.color.setHex(isNearest ? COLORS.nearest : onPath ? COLORS.path : COLORS.point);
      mesh.scale.setScalar(isNearest ? 2.2 : onPath ? 1.7 : 1);
    }
  }

  let imageAsked = 0; // only the newest image asked for is shown, however the loads end
  function setImage(url) {
    const ask = ++imageAsked;
    if (!url) {
      card.show(null, 1);
      redraw();
      return;
    }
    new THREE.TextureLoader().load(
      url,
      (texture) => {
        if (ask !== imageAsked) return;
        texture.colorSpace = THREE.SRGBColorSpace;
        const { width, height } = texture.image;
        card.show(texture, width / height);
        redraw();
      },
      undefined,
      () => ask === imageAsked && card.show(null, 1),
    );
  }

  // pointer gestures ---------------------------------------------------------------------------------------
  let gesture = null;

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    const grabbed = distanceTo(screenOf(rig.position), event) <= PICK_RADIUS_PX;
    const [x, y] = [event.clientX, event.clientY];
    const fromPole = Math.abs(state.camera.vertical) >= 89;
    gesture = { mode: grabbed ? "camera" : "view", x, y, x0: x, y0: y, moved: false, fromPole };
    canvas.classList.toggle("dragging", grabbed);
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!gesture) return;
    const dx = event.clientX - gesture.x;
    const dy = event.clientY - gesture.y;
    if (!gesture.moved && Math.hypot(dx, dy) < CLICK_SLOP_PX) return;
    gesture.moved = true;
    gesture.x = event.clientX;
    gesture.y = event.clientY;
    if (gesture.mode === "camera") handlers.onDrag(followPointer(dx, dy, axesOf(gesture)));
    else {
      view.horizontal -= dx * VIEW_DEGREES_PER_PX;
      view.vertical = clamp(view.vertical + dy * VIEW_DEGREES_PER_PX, -10, 85);
      placeViewer();
    }
  });

  const endGesture = (event) => {
    if (!gesture) return;
    const { mode, moved } = gesture;
    gesture = null;
    canvas.classList.remove("dragging");
    if (mode === "camera" && moved) handlers.onRelease();
    else if (!moved) {
      const entry = pointAt(event);
      if (entry) handlers.onPick(entry);
    }
  };
  canvas.addEventListener("pointerup", endGesture);
  canvas.addEventListener("pointercancel", () => {
    gesture = null;
  });

  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      // Lines and pages are normalised to pixels, then clamped, so one notch is one even step.
      const pixels = event.deltaY * (event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? 400 : 1);
      handlers.onZoom(-clamp(pixels, -120, 120) * WHEEL_ZOOM_PER_PX);
    },
    { passive: false },
  );

  /** Which axes a camera drag moves, by the way the pointer went since it was pressed: a drag that is mostly
   * sideways only turns the camera (at the same height), one mostly up or down only raises or lowers it, any
   * other both. A drag that started at a pole always moves both: it leaves the pole the way the pointer goes. */
  function axesOf({ x, y, x0, y0, fromPole }) {
    if (fromPole) return "both";
    const [across, along] = [Math.abs(x - x0), Math.abs(y - y0)];
    if (along <= STRAIGHT_DRAG * across) return "horizontal";
    if (across <= STRAIGHT_DRAG * along) return "vertical";
    return "both";
  }

  /** The change of camera that moves its picture on screen by (dx, dy): a damped least-squares step in the
   * axes the drag moves (`axes`: "both", "horizontal" or "vertical"). */
  function followPointer(dx, dy, axes) {
    const { vertical, zoom } = state.camera;
    const atPole = gesture.fromPole && Math.abs(vertical) >= 89;
    const horizontal = atPole ? meridianToward(dx, dy) : state.camera.horizontal;
    const screenAt = (camera) => screenOf(new THREE.Vector3(...positionOf(camera)));
    const here = screenAt({ horizontal, vertical, zoom });
    const alongH = screenAt({ horizontal: horizontal + 1, vertical, zoom });
    // at a pole a degree up would be clamped back to where it is, a derivative of 0: take a degree down
    const up = vertical + 1 <= 89 ? 1 : -1;
    const alongV = screenAt({ horizontal, vertical: vertical + up, zoom });
    const a = [alongH.x - here.x, alongH.y - here.y];
    const b = [(alongV.x - here.x) * up, (alongV.y - here.y) * up];
    const damping = 0.5;
    const aa = a[0] * a[0] + a[1] * a[1] + damping;
    const bb = b[0] * b[0] + b[1] * b[1] + damping;
    const ab = a[0] * b[0] + a[1] * b[1];
    const ad = a[0] * dx + a[1] * dy;
    const bd = b[0] * dx + b[1] * dy;
    const det = aa * bb - ab * ab;
    const step = {
      both: [(bb * ad - ab * bd) / det, (aa * bd - ab * ad) / det],
      horizontal: [ad / aa, 0],
      vertical: [0, bd / bb],
    }[axes];
    const [dh, dv] = step.map((change) => clamp(change, -30, 30));
    return { horizontal: horizontal + dh, vertical: clamp(vertical + dv, -90, 90) };
  }

  /** At a pole every horizontal angle is the same point: the one whose way off the pole goes the pointer's. */
  function meridianToward(dx, dy) {
    const { vertical, zoom } = state.camera;
    const pole = screenOf(new THREE.Vector3(...positionOf({ horizontal: 0, vertical, zoom })));
    const off = vertical > 0 ? vertical - 1 : vertical + 1;
    let best = state.camera.horizontal;
    let most = -Infinity;
    for (let horizontal = 0; horizontal < 360; horizontal += 5) {
      const next = screenOf(new THREE.Vector3(...positionOf({ horizontal, vertical: off, zoom })));
      const along = (next.x - pole.x) * dx + (next.y - pole.y) * dy;
      if (along > most) [best, most] = [horizontal, along];
    }
    return best;
  }

  function screenOf(point) {
    const rect = canvas.getBoundingClientRect();
    const projected = point.clone().project(viewer);
    return {
      x: rect.left + ((projected.x + 1) / 2) * rect.width,
      y: rect.top + ((1 - projected.y) / 2) * rect.height,
    };
  }

  function pointAt(event) {
    const rect = canvas.getBoundingClientRect();
    const pointer = new THREE.Vector2(
      ((event.clientX - rect.left) / rect.width) * 2 - 1,
      -((event.clientY - rect.top) / rect.height) * 2 + 1,
    );
    const raycaster = new THREE.Raycaster();
    raycaster.setFromCamera(pointer, viewer);
    const hit = raycaster.intersectObjects(pointMeshes, false)[0];
    if (hit) return hit.object.userData.entry;
    // Small targets on a phone: the nearest point within reach on screen.
    let best = null;
    let bestDistance = 16;
    for (const mesh of pointMeshes) {
      const distance = distanceTo(screenOf(mesh.position), event);
      if (distance < bestDistance) [best, bestDistance] = [mesh.userData.entry, distance];
    }
    return best;
  }

  /** Look from where the view started, however it was dragged. */
  function resetView() {
    Object.assign(view, VIEW_START);
    placeViewer();
  }

  placeViewer();
  resize();
  return {
    setCamera,
    resetView,
    setSnapPoints,
    setPath,
    setImage,
    /** For tests and tools: where things are, in scene units and in page pixels. */
    debug: {
      cameraPosition: () => rig.position.toArray(),
      imageEdge: (side) => card.edge(side).toArray(),
      screenOf: (xyz) => screenOf(new THREE.Vector3(...xyz)),
      cameraOnScreen: () => screenOf(rig.position),
      pointOnScreen: (camera) => screenOf(new THREE.Vector3(...positionOf(camera))),
    },
  };
}

function distanceTo(point, event) {
  return Math.hypot(point.x - event.clientX, point.y - event.clientY);
}

function circleGeometry(radius, segments) {
  const points = [];
  for (let i = 0; i < segments; i += 1) {
    const angle = (i / segments) * Math.PI * 2;
    points.push(new THREE.Vector3(Math.cos(angle) * radius, 0, Math.sin(angle) * radius));
  }
  return new THREE.BufferGeometry().setFromPoints(points);
}

/** The input image as a card facing +z (the front camera), with a plain back and a border. */
function makeCard() {
  const group = new THREE.Group();
  const front = new THREE.Mesh(
    new THREE.PlaneGeometry(1, 1),
    new THREE.MeshBasicMaterial({ color: 0x3a4356, side: THREE.FrontSide }),
  );
  const back = new THREE.Mesh(
    new THREE.PlaneGeometry(1, 1),
    new THREE.MeshBasicMaterial({ color: 0x262c38, side: THREE.FrontSide }),
  );
  back.rotation.y = Math.PI;
  const border = new THREE.LineLoop(
    new THREE.BufferGeometry().setFromPoints([
      new THREE.Vector3(-0.5, -0.5, 0), new THREE.Vector3(0.5, -0.5, 0),
      new THREE.Vector3(0.5, 0.5, 0), new THREE.Vector3(-0.5, 0.5, 0),
    ]),
    new THREE.LineBasicMaterial({ color: 0x8893a8 }),
  );
  group.add(front, back, border);
  const show = (texture, aspect) => {
    front.material.map = texture;
    front.material.color.setHex(texture ? 0xffffff : 0x3a4356);
    front.material.needsUpdate = true;
    const width = Math.min(CARD_HEIGHT * aspect, CARD_MAX_WIDTH);
    group.scale.set(width, width / aspect, 1);
  };
  show(null, 1);
  // The image's left edge (its first pixel column) in the scene: the subject's right, when it faces us.
  const edge = (side) => {
    group.updateMatrixWorld(true);
    return new THREE.Vector3(side === "left" ? -0.5 : 0.5, 0, 0).applyMatrix4(group.matrixWorld);
  };
  return { group, show, edge };
}

/** A small camera: a body and a lens frustum along its local +z, which lookAt turns to the subject. */
function makeCameraModel() {
  const rig = new THREE.Group();
  const material = new THREE.MeshBasicMaterial({ color: COLORS.camera });
  const body = new THREE.Mesh(new THREE.BoxGeometry(0.26, 0.18, 0.2), material);
  const lens = new THREE.Mesh(new THREE.CylinderGeometry(0.05, 0.07, 0.1, 16), material);
  lens.rotation.x = Math.PI / 2;
  lens.position.z = 0.14;
  const frustum = new THREE.LineSegments(
    new THREE.EdgesGeometry(new THREE.ConeGeometry(0.32, 0.5, 4, 1, true)),
    new THREE.LineBasicMaterial({ color: COLORS.camera }),
  );
  frustum.rotation.x = -Math.PI / 2;
  frustum.rotation.y = Math.PI / 4;
  frustum.position.z = 0.42;
  rig.add(body, lens, frustum);
  return rig;
}
