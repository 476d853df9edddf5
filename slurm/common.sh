# Shared by the sbatch scripts: rendezvous from SLURM variables, the launch command, requeue.
# The run directory is fixed per job name so a requeued job resumes (trainer.resume=auto).
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=${MASTER_PORT:-29500}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-1}}
GPUS_PER_NODE=${GPUS_PER_NODE##*:}
NNODES=${SLURM_NNODES:-1}
RUN_DIR=${RUN_DIR:-outputs/slurm/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PY=${PY:-$REPO/.venv/bin/python}
# \$SLURM_NODEID is expanded by each srun task, so every node gets its own machine rank.
LAUNCH="$PY -m accelerate.commands.launch --num_machines $NNODES --num_processes $((NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_NODEID --main_process_ip $MASTER_ADDR --main_process_port $MASTER_PORT \
  --multi_gpu --rdzv_backend static --same_network -m musicdiff.train trainer.resume=auto hydra.run.dir=$RUN_DIR"

# On USR1 (sent 300 s before the time limit) forward SIGTERM to the trainer, which saves a
# checkpoint and exits; then requeue the job, which resumes from that checkpoint.
wait_and_requeue() {
  local pid=$1
  trap 'echo "preempted: checkpoint + requeue"; kill -TERM "$pid"; wait "$pid"; scontrol requeue "$SLURM_JOB_ID"' USR1
  wait "$pid"
}
