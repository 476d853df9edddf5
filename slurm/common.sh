# shellcheck shell=bash
# Sourced by the sbatch scripts: rendezvous from SLURM variables, the per-node launch, requeue.
#
# Submit from the repository root (sbatch copies the script to a spool directory, so the repo is
# found through $SLURM_SUBMIT_DIR), or export REPO=/path/to/musicdiff. Environment knobs:
#   RUN_DIR        run directory (default: outputs/slurm/<job name>-<job id>; a requeued job keeps its
#                  id, so it finds its checkpoints; set it to continue an earlier job's run)
#   GPUS_PER_NODE  processes per node (default: the GPUs SLURM gave the node)
#   MASTER_PORT    rendezvous port on the first node (default: derived from the job id)
#   CKPT_GRACE_S   seconds the trainers get to checkpoint after the stop signal (default 240)
#   PY             python of the environment (default: $REPO/.venv/bin/python)

REPO=${REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$REPO" || exit 1
PY=${PY:-$REPO/.venv/bin/python}
NNODES=${SLURM_NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-1}}}
GPUS_PER_NODE=${GPUS_PER_NODE##*:}  # "a100:8" -> 8
NUM_PROCESSES=$((NNODES * GPUS_PER_NODE))
MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
RUN_DIR=${RUN_DIR:-$REPO/outputs/slurm/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
export MASTER_ADDR MASTER_PORT
# srun does not inherit sbatch's --cpus-per-task since Slurm 22.05
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
THREADS=$(( ${SLURM_CPUS_PER_TASK:-$GPUS_PER_NODE} / GPUS_PER_NODE ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( THREADS > 0 ? THREADS : 1 ))}  # per trainer process
# torchrun (inside `accelerate launch`) forwards USR1 to the trainers, which checkpoint and exit;
# it waits CKPT_GRACE_S for them before SIGKILL (torch >= 2.7 reads these PET_* variables).
export PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1
export PET_SHUTDOWN_TIMEOUT=${CKPT_GRACE_S:-240}

# The command one srun task runs on its node; $SLURM_NODEID is expanded there (machine rank).
# Arguments are Hydra overrides for musicdiff-train, quoted so spaces and brackets survive.
node_command() {
  local multi=""
  if [ "$NUM_PROCESSES" -gt 1 ]; then multi="--multi_gpu"; fi
  # shellcheck disable=SC2086 # $multi is empty or one flag
  printf '%q ' "$PY" -m accelerate.commands.launch $multi \
    --num_machines "$NNODES" --num_processes "$NUM_PROCESSES" \
    --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
    --rdzv_backend static --same_network --mixed_precision no --dynamo_backend no
  # shellcheck disable=SC2016 # expanded by the srun task on its node
  printf -- '--machine_rank "$SLURM_NODEID" '
  printf '%q ' -m musicdiff.train trainer.resume=auto "hydra.run.dir=$RUN_DIR" "$@"
}

# Run one task per node and wait. On USR1 (sbatch --signal=B:USR1@300: 5 min before the time
# limit) signal the job step, whose launchers forward it to the trainers; they checkpoint and
# exit, then the job is requeued (same job id and RUN_DIR) and resumes with trainer.resume=auto.
# A finished run (export/COMPLETE written) is not requeued. Preemption (SIGTERM from SLURM) is
# handled by the trainers alone: they checkpoint on SIGTERM and SLURM requeues (--requeue).
run_and_requeue() {
  local cmd pid
  cmd="$(node_command "$@")"
  echo "run dir: $RUN_DIR"
  echo "node command: $cmd"
  srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c "$cmd" &
  pid=$!
  # shellcheck disable=SC2064 # $pid is meant to be expanded now
  trap "requeue_after_checkpoint $pid" USR1
  # shellcheck disable=SC2064
  trap "echo 'SIGTERM (preemption): waiting for the trainers to checkpoint'; wait $pid || true" TERM
  wait "$pid" || true
  wait "$pid" 2>/dev/null || true  # a trap interrupts the first wait; the step may still be running
}

requeue_after_checkpoint() {
  local pid=$1
  trap '' USR1
  echo "time limit near: checkpointing, then requeueing job $SLURM_JOB_ID"
  scancel --signal=USR1 "$SLURM_JOB_ID" || true  # job steps only, not this batch shell
  wait "$pid" || true
  if [ -f "$RUN_DIR/export/COMPLETE" ]; then
    echo "training finished: not requeued"
  else
    scontrol requeue "$SLURM_JOB_ID" || true
  fi
}
