#!/usr/bin/env bash
# Submit the nightly copy job for one run date to a running Ray cluster, wait
# for it, and exit 0 only if it succeeded. Meant for cron (see copy-factory.cron).
#
#   RAY_ADDRESS=http://ray-head:8265 deploy/cron/nightly-copy.sh [--date YYYY-MM-DD] [--retry N] [-- JOB FLAGS...]
#
# - The run date is today's date in UTC unless --date says otherwise; it goes
#   to the job as --run-date, so the run is the same whatever the host's zone.
# - The submission id is nightly-copy-<date>. Ray refuses a second job with an
#   id it already has, so a cron that fires twice (or two schedulers) cannot
#   start two runs of a date. Run again for a date that was already submitted,
#   this script does not submit: it follows that job and exits with its result.
# - After a failed run, `--retry 2` submits nightly-copy-<date>-retry2; the job
#   resumes the unfinished attempt (or does nothing if the run is published).
# - Everything after `--` goes to jobs/nightly_copy.py (e.g. --output s3://...),
#   with {run_date} replaced by the date (e.g. --pairs s3://shop/pairs/{run_date}/).
#
# Environment:
#   RAY_ADDRESS               the cluster's dashboard / job API (required)
#   RAY_AUTH_MODE=token       needed on Ray >= 2.60 clusters with token auth (the default)
#   RAY                       the ray CLI to use (default: `ray` on PATH)
#   COPY_FACTORY_DIR          the repository uploaded as the working dir (default: this checkout)
#   COPY_FACTORY_RUNTIME_ENV  runtime env YAML (default: deploy/runtime_env.yaml);
#                             "none" when the cluster's nodes have the project installed
#
# Exit status: 0 the job succeeded; 1 it failed or was stopped (or the cluster
# could not be reached); 2 a usage error here.
set -euo pipefail

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
die() { echo "nightly-copy: $*" >&2; exit 2; }
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) nightly-copy: $*" >&2; }

run_date="$(date -u +%F)"
retry=""
while (($#)); do
  case "$1" in
    --date) [[ $# -ge 2 ]] || die "--date needs YYYY-MM-DD"; run_date="$2"; shift 2 ;;
    --retry) [[ $# -ge 2 ]] || die "--retry needs a number"; retry="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (job flags go after --; see --help)" ;;
  esac
done

[[ $run_date =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] && [[ "$(date -u -d "$run_date" +%F 2>/dev/null)" == "$run_date" ]] \
  || die "--date '$run_date' is not a valid YYYY-MM-DD date"
[[ -z $retry || $retry =~ ^[2-9]$|^[1-9][0-9]+$ ]] || die "--retry '$retry' must be a number from 2"
for arg in "$@"; do
  [[ $arg == --run-date || $arg == --run-date=* ]] && die "pass the date with --date, not --run-date after --"
done
[[ -n ${RAY_ADDRESS:-} ]] || die "RAY_ADDRESS is not set (the cluster's job API, e.g. http://ray-head:8265)"

repo_dir="${COPY_FACTORY_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
[[ -f $repo_dir/jobs/nightly_copy.py ]] || die "$repo_dir is not a copy-factory checkout (no jobs/nightly_copy.py)"
runtime_env="${COPY_FACTORY_RUNTIME_ENV:-$repo_dir/deploy/runtime_env.yaml}"
ray_cli="${RAY:-ray}"
submission_id="nightly-copy-${run_date}${retry:+-retry$retry}"

# The job's status word (SUCCEEDED, FAILED, STOPPED, RUNNING, PENDING) from
# `ray job status`; fails if the cluster does not know the id.
job_status() {
  local out
  out="$("$ray_cli" job status --address "$RAY_ADDRESS" "$submission_id" 2>&1)" || return 1
  case "$out" in
    *"' succeeded"*) echo SUCCEEDED ;;
    *"' failed"*) echo FAILED ;;
    *"' was stopped"*) echo STOPPED ;;
    *) sed -n "s/.*Status for job '[^']*': \([A-Z]*\).*/\1/p" <<<"$out" | head -n 1 ;;
  esac
}

# Wait for the job if it is still going, then exit with its verdict.
finish() {
  local status
  status="$(job_status)" || { log "$submission_id: cannot read the job's status"; exit 1; }
  case "$status" in
    SUCCEEDED|FAILED|STOPPED) ;;
    *) "$ray_cli" job logs --address "$RAY_ADDRESS" --follow "$submission_id" || true
       status="$(job_status)" || { log "$submission_id: cannot read the job's status"; exit 1; } ;;
  esac
  if [[ $status == SUCCEEDED ]]; then
    log "$submission_id succeeded"
    exit 0
  fi
  log "$submission_id ended ${status:-in an unknown state}; fix the cause, then rerun with" \
      "--date $run_date --retry $(( ${retry:-1} + 1 ))"
  exit 1
}

if status="$(job_status)" && [[ -n $status ]]; then
  # Already submitted for this date (a second cron firing, a manual run):
  # never a second run; report on the first one instead.
  log "$submission_id was already submitted ($status); not submitting it again"
  finish
fi

cmd=("$ray_cli" job submit --address "$RAY_ADDRESS" --submission-id "$submission_id" --working-dir "$repo_dir")
if [[ $runtime_env != none ]]; then
  [[ -f $runtime_env ]] || die "runtime env file $runtime_env does not exist"
  cmd+=(--runtime-env "$runtime_env")
fi
job_args=()
for arg in "$@"; do job_args+=("${arg//\{run_date\}/$run_date}"); done
cmd+=(-- python jobs/nightly_copy.py --run-date "$run_date" "${job_args[@]}")

log "submitting $submission_id to $RAY_ADDRESS"
# `ray job submit` waits and streams the job's log. It exits 1 only for a
# FAILED job (0 for a STOPPED one), and non-zero if Ray refused the id: so
# the verdict comes from the job's final status, not from this exit code.
"${cmd[@]}" || log "ray job submit exited with status $?"
finish
