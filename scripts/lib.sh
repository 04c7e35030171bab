# Shared shell helpers for scripts/*: find an interpreter that really runs, build a venv.
# shellcheck shell=bash

# find_python MIN_MINOR MAX_MINOR: print the path of a CPython 3.MIN..3.MAX that runs.
# Tries PATH first (python3.X, then python3), then pyenv installs (whose bare shims may refuse
# to run a version that is not selected).
find_python() {
    local min=$1 max=$2 cand minor prefix
    local check="import sys; sys.exit(0 if (3, $min) <= sys.version_info[:2] <= (3, $max) else 1)"
    for ((minor = min; minor <= max; minor++)); do
        cand=$(command -v "python3.$minor" 2>/dev/null) || continue
        if "$cand" -c "$check" >/dev/null 2>&1; then echo "$cand"; return 0; fi
    done
    cand=$(command -v python3 2>/dev/null)
    if [ -n "$cand" ] && "$cand" -c "$check" >/dev/null 2>&1; then echo "$cand"; return 0; fi
    if command -v pyenv >/dev/null 2>&1; then
        for ((minor = min; minor <= max; minor++)); do
            for version in $(pyenv versions --bare 2>/dev/null | grep -E "^3\.$minor\.[0-9]+$" | sort -rV); do
                prefix=$(pyenv prefix "$version" 2>/dev/null) || continue
                if "$prefix/bin/python3" -c "$check" >/dev/null 2>&1; then
                    echo "$prefix/bin/python3"; return 0
                fi
            done
        done
    fi
    return 1
}

# ensure_venv DIR PYTHON: create DIR with PYTHON and install requirements-dev.txt into it.
# XStatic-Bootstrap's sdist imports pkg_resources while building: setuptools<81 is put in
# the venv first and that package is built without isolation.
ensure_venv() {
    local dir=$1 python=$2 stamp
    stamp="$dir/.installed-$(cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && "$dir/bin/python" -c "import django" >/dev/null 2>&1; then
        return 0
    fi
    echo "==> creating $dir with $("$python" --version 2>&1)"
    "$python" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --upgrade pip "setuptools<81" wheel 2>&1 | quiet_pip
    "$dir/bin/python" -m pip install --quiet --no-build-isolation "XStatic-Bootstrap>=5.3,<5.4" 2>&1 | quiet_pip
    "$dir/bin/python" -m pip install --quiet -r requirements-dev.txt 2>&1 | quiet_pip
    rm -f "$dir"/.installed-*
    touch "$stamp"
}

# answers HOST PORT: true when something accepts TCP connections there.
answers() {
    (exec 3<>"/dev/tcp/$1/$2") >/dev/null 2>&1
}

# quiet_pip: drop pip's notes about index locations that do not exist on this machine.
quiet_pip() {
    grep -v "^WARNING: Location '.*' is ignored" || true
}
