# Sourced by the benchmark drivers that also run loom_bench under mpirun (bench_comm.sh,
# bench_ring.sh). Sets $bench (built first if missing) and $out (a temporary folder removed on
# exit), and defines run_mpi.
build_dir="${LOOM_BUILD_DIR:-build}"
bench="$build_dir/bench/loom_bench"
if [ ! -x "$bench" ]; then
  bash scripts/setup.sh >&2
fi
# Containers often run as root; ranks may outnumber the cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# run_mpi NP ARGS...: loom_bench ARGS on NP processes; every rank measures, only rank 0 reports.
run_mpi() {
  local np="$1"
  shift
  mpirun --oversubscribe -np "$np" bash -c \
    'if [ "$OMPI_COMM_WORLD_RANK" = 0 ]; then exec "$@"; else exec "$@" >/dev/null; fi' \
    rank "$bench" "$@"
}
