// The camera as the page holds it, and every control that sets it: the 3D view's gestures, the sliders and
// number inputs, the presets and the keyboard. All of them go through `set`, which redraws all the others.
import { clamp, round, wrapDegrees, ZOOM_DEFAULT } from "./camera.js";

const AXES = [
  { name: "horizontal", id: "horizontal-angle", label: "Horizontal angle", low: 0, high: 360 },
  { name: "vertical", id: "vertical-angle", label: "Vertical angle", low: -90, high: 90 },
  { name: "zoom", id: "zoom", label: "Zoom", low: 0, high: 10 },
];
const KEY_STEPS = { horizontal: 45, vertical: 30, zoom: 1 };

export function createCameraControls({ table, scene, canvas, phrase }) {
  let camera = { horizontal: 0, vertical: 0, zoom: ZOOM_DEFAULT };
  const listeners = [];

  // rounded here, once, as requests send them: the lit pose and phrase are those of the values sent
  function normalised(next) {
    return {
      horizontal: next.horizontal === 360 ? 360 : round(wrapDegrees(next.horizontal)),
      vertical: round(clamp(next.vertical, -90, 90)),
      zoom: round(clamp(next.zoom, 0, 10)),
    };
  }

  /** Set some axes; with `snap`, move onto the nearest pose's snap point (the zoom is kept). */
  function set(partial, { snap = false } = {}) {
    camera = normalised({ ...camera, ...partial });
    if (snap) {
      const onPoint = table.cameraOf(table.nearest(camera));
      camera = { ...camera, horizontal: onPoint.horizontal, vertical: onPoint.vertical };
    }
    const nearest = table.nearest(camera);
    for (const axis of AXES) {
      const value = round(camera[axis.name]);
      const slider = document.getElementById(axis.id);
      const number = document.getElementById(`${axis.id}-number`);
      if (document.activeElement !== number) number.value = String(value);
      slider.value = String(value);
      slider.setAttribute("aria-valuetext", `${value} (${nearest.prompt})`);
    }
    phrase.textContent = nearest.prompt;
    canvas.setAttribute("aria-valuetext", nearest.prompt);
    if (scene) scene.setCamera(camera, nearest);
    for (const listener of listeners) listener(camera, nearest);
  }

  for (const axis of AXES) {
    const slider = document.getElementById(axis.id);
    const number = document.getElementById(`${axis.id}-number`);
    slider.addEventListener("input", () => set({ [axis.name]: Number(slider.value) }));
    const error = document.getElementById(`${axis.id}-error`);
    const outOfRange = `${axis.label} must be between ${axis.low} and ${axis.high}`;
    number.addEventListener("input", () => {
      // an unfinished number ("", "-", "1e" read as "") is not judged yet: leaving the field puts the camera back
      if (number.value === "") {
        error.textContent = "";
        return;
      }
      const value = Number(number.value);
      if (value < axis.low || value > axis.high) {
        error.textContent = outOfRange;
        return;
      }
      error.textContent = "";
      set({ [axis.name]: value });
    });
    // the camera when the typing began: each keystroke in range moves it, so a number refused at the end (95)
    // would leave it at a prefix on the way (9)
    let before = camera[axis.name];
    number.addEventListener("focus", () => {
      before = camera[axis.name];
    });
    number.addEventListener("change", () => {
      // leaving (or Enter in) the field: a value refused (or unfinished) takes the camera back to where it was
      // before the typing, and its error goes
      const value = Number(number.value);
      if (number.value === "" || value < axis.low || value > axis.high) set({ [axis.name]: before });
      before = camera[axis.name];
      number.value = String(round(camera[axis.name]));
      error.textContent = "";
    });
  }

  for (const button of document.querySelectorAll(".presets button")) {
    button.addEventListener("click", () => {
      const partial = {};
      if (button.dataset.horizontal !== undefined) partial.horizontal = Number(button.dataset.horizontal);
      if (button.dataset.vertical !== undefined) partial.vertical = Number(button.dataset.vertical);
      set(partial);
    });
  }

  document.getElementById("reset-camera").addEventListener("click", () => {
    for (const axis of AXES) document.getElementById(`${axis.id}-error`).textContent = "";
    set({ horizontal: 0, vertical: 0, zoom: ZOOM_DEFAULT });
  });

  canvas.addEventListener("keydown", (event) => {
    const moves = {
      ArrowRight: { horizontal: camera.horizontal + KEY_STEPS.horizontal },
      ArrowLeft: { horizontal: camera.horizontal - KEY_STEPS.horizontal },
      ArrowUp: { vertical: camera.vertical + KEY_STEPS.vertical },
      ArrowDown: { vertical: camera.vertical - KEY_STEPS.vertical },
      "+": { zoom: camera.zoom + KEY_STEPS.zoom },
      "=": { zoom: camera.zoom + KEY_STEPS.zoom },
      "-": { zoom: camera.zoom - KEY_STEPS.zoom },
    };
    if (event.key === "Enter") set({}, { snap: true });
    else if (moves[event.key]) set(moves[event.key], { snap: event.key.startsWith("Arrow") });
    else return;
    event.preventDefault();
  });

  set({});
  return {
    get camera() {
      return { ...camera };
    },
    set,
    onChange(listener) {
      listeners.push(listener);
    },
    /** Scene gestures, wired by main.js. */
    sceneHandlers: {
      onDrag: (partial) => set(partial),
      onRelease: () => set({}, { snap: true }),
      onZoom: (delta) => set({ zoom: camera.zoom + delta }),
    },
  };
}
