# Sourced by scripts/test and scripts/serve with what they need: `serve` (reangle and what serving needs) or
# `test` (that, plus the test tools and the providers' clients). Makes .venv when missing and installs only
# when pyproject.toml changed or the extras asked for are not there yet.
wanted_extras=${1:-test}
python_bin=$(command -v python3.11 || command -v python3)
if [[ ! -x .venv/bin/python ]]; then
  echo "creating .venv with $("$python_bin" --version) ..." >&2
  "$python_bin" -m venv .venv
fi
stamp=.venv/.reangle-install
project_hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
installed=$(cat "$stamp" 2>/dev/null || true)
if [[ $installed != "$project_hash test" && $installed != "$project_hash $wanted_extras" ]]; then
  if [[ $wanted_extras == test ]]; then
    echo "installing reangle with its test tools into .venv (the first time takes a few minutes) ..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2> >(grep -v "is ignored" >&2)
  else
    echo "installing reangle and what serving needs into .venv: torch, diffusers, transformers, FastAPI ..." >&2
    echo "(the first time downloads or unpacks several GB and takes a few minutes; pip's progress follows)" >&2
    .venv/bin/python -m pip install --disable-pip-version-check --progress-bar on -e . \
      2> >(grep -v "is ignored" >&2) |
      { grep --line-buffered -E "^(Collecting|Processing|Downloading|Installing|Successfully)" >&2 || true; }
  fi
  echo "$project_hash $wanted_extras" >"$stamp"
fi

# The studio's browser tests drive Debian's Chromium (Playwright's own browser download is not used).
if [[ $wanted_extras == test && ! -x /usr/bin/chromium ]]; then
  echo "installing Debian's chromium for the studio's browser tests ..." >&2
  apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
fi
