# Sourced by scripts/test and scripts/serve: make sure .venv exists and holds the current reangle install.
python_bin=$(command -v python3.11 || command -v python3)
if [[ ! -x .venv/bin/python ]]; then
  "$python_bin" -m venv .venv
fi
stamp=.venv/.reangle-install
wanted=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  echo "installing reangle and its dependencies into .venv (first run takes a few minutes) ..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2> >(grep -v "is ignored" >&2)
  echo "$wanted" >"$stamp"
fi
