# Shared by scripts/serve, scripts/test and the load tests: install what the
# build and the tests need when it is missing, and pick a target directory
# that outlives the clone (RocksDB's C++ takes a quarter of an hour to
# build).

# Installs Debian packages that are missing. Runs apt-get only when needed.
ensure_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# RocksDB's Rust bindings are generated with libclang at build time.
ensure_build_deps() {
    ensure_packages libclang-dev
}

# One target directory for tests, benches and the binary, outside the clone
# so a fresh clone reuses an earlier build; cargo rebuilds what changed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/loyalty-target}"

# Every checkout shares that directory, and cargo gives the workspace's own
# artifacts the same names in each and judges them fresh by file times: a
# checkout whose files are older than another checkout's last build would
# run that build's code. So when the directory was last built from another
# checkout (or nobody recorded which), this checkout's sources and manifests
# are made newer than its artifacts, and cargo rebuilds the workspace's
# crates (not the dependencies). Called with the checkout's root as the
# working directory, as every script sources this file. Checkouts must take
# turns: scripts running at once from two checkouts can still mix builds.
claim_target_dir() {
    local stamp="$CARGO_TARGET_DIR/.loyalty-checkout" here
    here="$(pwd -P)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$here" ]; then
        # The project's own files only (git's list, less what it ignores,
        # such as a target or data directory inside the checkout).
        if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            git ls-files -z --cached --others --exclude-standard -- '*.rs' '*Cargo.toml'
        else
            find . \( -path ./.git -o -path ./target -o -path ./data \) -prune -o \
                \( -name '*.rs' -o -name 'Cargo.toml' \) -type f -print0 2>/dev/null || true
        fi | xargs -0 -r touch
        mkdir -p "$CARGO_TARGET_DIR"
        printf '%s\n' "$here" >"$stamp"
    fi
}
claim_target_dir

# A free TCP port on the loopback interface, for a server a script starts,
# other than the PORTS given: a script that takes several before starting
# any server would otherwise be given the same one twice, now and then.
# Taken below the kernel's ephemeral range, which it also uses for the
# source ports of outgoing connections: a port from there could be taken
# by a client (the load generator, an engine's connection to NATS) before
# its server binds it.
free_port() { # [PORTS...]
    python3 - "$@" <<'PY'
import random, socket, sys
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
ports = list(range(10000, max(low, 10001)))
random.shuffle(ports)
for port in ports:
    if str(port) in sys.argv[1:]:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    sys.exit("no free loopback port below the ephemeral range")
PY
}

# CPU time of process PID so far, in clock ticks (user + system; see
# `getconf CLK_TCK`). The fields are counted after the command name, which
# is in parentheses and may hold spaces.
cpu_ticks() { # PID
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# CPU time of each of process PID's threads so far, in clock ticks, summed
# by thread name with a trailing "-N" dropped (the shards are
# loyalty-sh-0, -1, ...): lines of NAME<TAB>TICKS, for
# loadtests/ab_figures.py. Fields are counted after the name, as above. A
# thread that ends while it is listed is left out, not an error.
thread_ticks() { # PID
    { cat /proc/"$1"/task/*/stat 2>/dev/null || true; } \
        | sed -E 's/^[0-9]+ \((.*)\) (.*)$/\1\t\2/' \
        | awk -F'\t' '{ split($2, f, " "); name = $1; sub(/-[0-9]+$/, "", name); ticks[name] += f[12] + f[13] }
                      END { for (name in ticks) printf "%s\t%d\n", name, ticks[name] }'
}

# Waits until URL answers with success, polling every 0.1 s for up to
# SECONDS (default 30); otherwise stops the script.
wait_http() { # URL [SECONDS]
    local tries=$(( ${2:-30} * 10 ))
    for _ in $(seq 1 "$tries"); do
        curl -sf "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "not up: $1" >&2
    exit 1
}

# Waits up to 10 s until something listens on the loopback PORT (a
# nats-server just started); a server that never comes up shows in the
# first request to it.
wait_port() { # PORT
    for _ in $(seq 1 100); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
}

# Writes COUNT enrollments (one business, one active program) straight into
# a new data directory with history_gen, much faster than over the API;
# their ids go to IDS_OUT, one per line, and the business's API key is
# printed. BIN is the directory of the release binaries.
write_enrollments() { # BIN DATA_DIR COUNT IDS_OUT
    local summary="$2.gen.json"
    "$1/history_gen" --data-dir "$2" --enrollments "$3" --earns 0 --ids-out "$4" >"$summary"
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['api_key'])" "$summary"
}

# One 5 s round of the k6 HTTP earn load (loadtests/k6/http.js, closed
# model) against BASE_URL that walks the enrollments from a random one, so
# a round of as many requests reaches every one: a warm_up round for the
# HTTP scripts. K6_ARGS give the enrollments (`-e ENROLLMENTS_FILE=...`,
# `-e API_KEY=...`). k6's complaints about its thresholds in these rounds
# are not worth showing.
k6_warm_up_round() { # BASE_URL VUS K6_ARGS...
    local base="$1" vus="$2"
    shift 2
    k6 run --quiet --no-color -e "BASE_URL=$base" -e SCENARIO=closed -e MIX=earn-only \
        -e PICK=walk -e "VUS=$vus" -e DURATION=5s "$@" loadtests/k6/http.js 2>/dev/null
}

# One measured run of the k6 HTTP earn load against BASE_URL: VUS
# requests in flight (closed model) for DURATION; k6's summary goes to
# SUMMARY_OUT (JSON) and what it prints to LOG_OUT. Returns k6's status,
# which is not zero when a threshold failed.
k6_earn_run() { # BASE_URL VUS DURATION SUMMARY_OUT LOG_OUT K6_ARGS...
    local base="$1" vus="$2" duration="$3" summary="$4" log="$5"
    shift 5
    k6 run --quiet --no-color -e "BASE_URL=$base" -e SCENARIO=closed -e MIX=earn-only -e "VUS=$vus" \
        -e "DURATION=$duration" "$@" --summary-export "$summary" loadtests/k6/http.js >/dev/null 2>"$log"
}

# Warm-up of a load test: every enrollment is loaded from disk on its first
# earn, and the runs measure enrollments in memory, as a shop's regulars
# are. Runs COMMAND (a round of load; its output to stdout is dropped) up to
# six times, until the engine at BASE_URL has COUNT enrollments in memory
# (its loyalty_active_enrollments gauge); otherwise stops the script rather
# than let it measure something else.
warm_up() { # BASE_URL COUNT COMMAND...
    local base="$1" count="$2" active=0
    shift 2
    echo "warm-up: activating $count enrollments" >&2
    for _ in 1 2 3 4 5 6; do
        "$@" >/dev/null || true
        active=$(curl -sf "$base/metrics" | awk '/^loyalty_active_enrollments / {print $2}') || active=0
        [ "${active:-0}" -ge "$count" ] && return 0
    done
    echo "warm-up: only ${active:-0} of $count enrollments in memory" >&2
    exit 1
}
