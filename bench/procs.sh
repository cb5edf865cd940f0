# Process hygiene shared by the bench scripts (sourced, not run).
# Everything started with `bg` runs in its own session/process group and is killed,
# with $WORK removed, when the sourcing script exits. The script sets WORK first.

PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# bg LOGFILE CMD... : start CMD in a new session with output to LOGFILE, remember its pid.
bg() {
  local log=$1; shift
  setsid "$@" >"$log" 2>&1 &
  PIDS+=("$!")
}
