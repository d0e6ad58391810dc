// What jobs made: the results gallery (pose and seed, download, use as input, before/after), the turntable
// of an orbit or path, and the history of the key's recent jobs.

const $ = (id) => document.getElementById(id);
const HISTORY_POLL_MS = 3000; // while a listed job is unfinished

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function fileName(asset, index) {
  const suffix = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" }[asset.mime_type] || "bin";
  const stem = asset.role === "image" ? "result" : asset.role.replace("_", "-");
  return `${stem}-${index}.${suffix}`;
}

/** The exact prompt the model got for an output ("<sks> right side view elevated shot close-up ..."). */
export function promptOf(asset) {
  if (asset.plan && asset.plan.prompt) return asset.plan.prompt;
  return asset.pose ? `azimuth ${asset.pose.azimuth_deg}°, elevation ${asset.pose.elevation_deg}°` : "";
}

export function createGallery({ onUseAsInput }) {
  let inputUrl = null;

  function setInputUrl(url) {
    inputUrl = url;
  }

  function compare(afterUrl) {
    $("compare").hidden = !inputUrl;
    $("compare-before").src = inputUrl || "";
    $("compare-after").src = afterUrl;
    $("compare-slider").value = "50";
    $("compare-after").style.clipPath = "inset(0 0 0 50%)";
  }
  $("compare-slider").addEventListener("input", () => {
    $("compare-after").style.clipPath = `inset(0 0 0 ${$("compare-slider").value}%)`;
  });

  function showJob(job) {
    const assets = job.output ? job.output.assets : [];
    const views = assets.filter((a) => a.role === "image" || a.role === "view");
    const gallery = $("results");
    gallery.replaceChildren(
      ...views.map((asset, index) => {
        const label = promptOf(asset);
        const use = element("button", { type: "button", text: "Use as input" });
        use.addEventListener("click", () => onUseAsInput(asset));
        const before = element("button", { type: "button", text: "Before / after" });
        before.addEventListener("click", () => compare(asset.url));
        return element("li", { class: "result" }, [
          element("img", { src: asset.url, alt: `Output ${index + 1}: ${label}` }),
          element("p", { class: "caption", text: `${label} · seed ${asset.seed ?? "?"}` }),
          element("p", { class: "row" }, [
            element("a", { href: asset.url, download: fileName(asset, index), text: "Download" }),
            use,
            before,
          ]),
        ]);
      }),
    );
    const turntable = assets.find((a) => a.role === "turntable");
    $("turntable-box").hidden = !turntable;
    if (turntable) {
      $("turntable").src = turntable.url;
      const sheet = assets.find((a) => a.role === "contact_sheet");
      $("turntable-links").replaceChildren(
        element("a", { href: turntable.url, download: "turntable.webp", text: "Download turntable" }),
        ...(sheet ? [element("a", { href: sheet.url, download: "contact-sheet.png", text: "Contact sheet" })] : []),
      );
    }
    if (views.length && job.kind === "edit") compare(views[0].url);
    else $("compare").hidden = true;
  }

  return { showJob, setInputUrl };
}

/** The history list: recent jobs with status, a thumbnail and their settings; a click loads one back. While
 * any listed job is unfinished the list refreshes itself every few seconds, so its row ends as the job does. */
export function createHistory({ api, onLoad, showError }) {
  let timer = null;

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    $("history-error").textContent = "";
    let page;
    try {
      page = await api.listJobs(20);
    } catch (error) {
      showError(error, "history");
      return;
    }
    $("history").replaceChildren(...page.data.map(item));
    if (page.data.some((job) => job.status === "queued" || job.status === "processing")) {
      clearTimeout(timer); // another refresh may have started meanwhile: keep one timer
      timer = setTimeout(refresh, HISTORY_POLL_MS);
    }
  }

  function item(job) {
    const thumb = (job.output.assets || []).find((a) => a.role === "image" || a.role === "view");
    const settings = describe(job.input);
    const button = element("button", { type: "button", class: "history-item", "data-job": job.id }, [
      thumb ? element("img", { src: thumb.url, alt: "" }) : element("span", { class: "no-thumb" }),
      element("span", { class: `status status-${job.status}`, text: job.status }),
      element("span", { class: "settings", text: `${job.kind}: ${settings}` }),
    ]);
    button.setAttribute("aria-label", `Load ${job.kind} job ${job.id} (${job.status}): ${settings}`);
    button.addEventListener("click", () => onLoad(job));
    return element("li", {}, [button]);
  }

  $("refresh-history").addEventListener("click", refresh);
  return { refresh };
}

/** A job's settings in a few words, in the fields it was given: the studio's `h 90° v 30° zoom 8`, the
 * API's `azimuth 90° elevation 30° distance 0.6`, an orbit's azimuths or its number of poses. */
export function describe(input) {
  const parts = [];
  if (input.poses) {
    parts.push(`${input.poses.length} poses`);
  } else if (input.azimuths) {
    const azimuths = input.azimuths.map((a) => `${a}°`).join(" ");
    parts.push(`azimuths ${azimuths} elevation ${input.elevation ?? 0}° distance ${input.distance ?? 1}`);
  } else {
    const axes = [
      ["h", input.horizontal_angle, "°"], ["azimuth", input.azimuth, "°"],
      ["v", input.vertical_angle, "°"], ["elevation", input.elevation, "°"],
      ["zoom", input.zoom, ""], ["distance", input.distance, ""],
    ];
    const given = axes.filter(([, value]) => value != null);
    if (given.length) parts.push(given.map(([name, value, unit]) => `${name} ${value}${unit}`).join(" "));
  }
  if (input.prompt) parts.push(`“${input.prompt}”`);
  if (input.seed != null) parts.push(`seed ${input.seed}`);
  return parts.join(", ") || "defaults";
}
