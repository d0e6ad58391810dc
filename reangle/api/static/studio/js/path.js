// A path: poses picked in order (on the sphere or from the current camera), rendered as one orbit job.

const MAX_POSES = 16; // the orbit job's limit
const $ = (id) => document.getElementById(id);

export function createPath({ onChange }) {
  let entries = [];

  function render() {
    $("path-list").replaceChildren(
      ...entries.map((entry, index) => {
        const remove = document.createElement("button");
        remove.type = "button";
        remove.textContent = "remove";
        remove.setAttribute("aria-label", `Remove pose ${index + 1} (${entry.prompt}) from the path`);
        remove.addEventListener("click", () => {
          entries = entries.filter((_, k) => k !== index);
          render();
          focusAfterRemoving(index);
        });
        const item = document.createElement("li");
        item.append(document.createTextNode(entry.prompt.replace("<sks> ", "")), " ", remove);
        return item;
      }),
    );
    $("render-path").title = entries.length < 2 ? "pick at least 2 poses" : "";
    $("path-error").textContent = "";
    onChange(entries);
  }

  /** The list was rebuilt: keep the keyboard focus on the remove button that took the removed one's place,
   * else the one before it, else the list itself. */
  function focusAfterRemoving(index) {
    const removes = $("path-list").querySelectorAll("button");
    const next = removes[Math.min(index, removes.length - 1)];
    (next || $("path-list")).focus();
  }

  function add(entry) {
    if (entries.length >= MAX_POSES) {
      $("path-error").textContent = `A path has at most ${MAX_POSES} poses.`;
      return;
    }
    entries = [...entries, entry];
    render();
  }

  const pick = $("path-pick");
  pick.addEventListener("click", () => {
    pick.setAttribute("aria-pressed", String(pick.getAttribute("aria-pressed") !== "true"));
  });
  $("path-clear").addEventListener("click", () => {
    entries = [];
    render();
  });

  return {
    add,
    get picking() {
      return pick.getAttribute("aria-pressed") === "true";
    },
    get entries() {
      return [...entries];
    },
    set(list) {
      entries = list.slice(0, MAX_POSES);
      render();
    },
  };
}
