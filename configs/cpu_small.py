"""CPU-small: the small super-network's shape at a size two CPU cores can train (C=8, N=1).

The CPU scale of the reproduction queue (REPRODUCTION.md, "CPU scale"): CPU-small for
the `s-*` runs, configs/cpu_medium.py (twice the channels and twice the cells, the
ratio of the paper's small C=32 N=2 to medium C=64 N=4) for the `m-*` runs. The
protocol was fixed before any run of it existed (a first protocol of 30,000 training
images per seed left the super-network at 19 % training accuracy, its rankings
indistinguishable from noise: results/cpu/README.md):

- data: real CIFAR-10 (a local .npz, --config.data.path). The split permutes the 50k
  training images with data.split_seed=0 as the study's 45k/5k split does; its first
  500 (the first 500 of the study's 5k validation images) are the validation images
  every arch is scored on, the next 22,500 (half the study's training images) the
  training images (data.train_subset); 4 epochs, so 90,000 training images per seed,
  each seed in its own order; the paper's optimiser and schedule, shortened;
- 3 seeds in one program, each seed's step written out (train.seed_loop='unrolled'),
  strictly fair groups of |O| micro-batches of 128;
- groups: top-10, 25, 50, 100 and a random 100 of the subset; subsets of 729 archs or
  fewer are scored whole (the sweep sets eval.scope='all' for them); each arch alone
  on the single-path forward (eval.packing='single_path');
- the ranking trajectory: 40 archs of the subset after every epoch.

Measured on the idle 2-core machine (2026-12-06, jax 0.10.2, fp32, batch 128, one
step per dispatch, 500 validation images; BUILD.md, "CPU scale", has the commands):

| | CPU-small (C=8, N=1) | CPU-medium (C=16, N=2) |
| --- | --- | --- |
| train, 3 seeds unrolled | 493 images/s | 132 images/s |
| train, 3 seeds vmapped | 162 images/s | 39 images/s |
| score random archs, single path | 5.4 archs/s | 1.7 archs/s |
| score random archs, fair groups | 1.9 archs/s | 0.40 archs/s |
| score whole cosets, fair groups | 4.2 archs/s | 0.87 archs/s |

Uniform sampling steps one micro-batch on one path. With the seeds unrolled each
edge's op is a conditional, inside which XLA:CPU runs convolutions many times slower
(fwd+bwd of one conv: 25 ms alone, 602 ms inside lax.switch, 50 ms with every branch
computed and one selected); train.uniform_ops='all' runs every allowed op and keeps
the drawn one's output and statistics, the same step. Measured side by side with 3
seeds unrolled (benchmarks/cpu_scale.jsonl, the machine busy with other jobs, so
ratios and not rates): uniform with the conditional 61.6 images/s, with every op
140.8 (2.3x); in an earlier pair, fair groups 181 and uniform with the conditional
41.7 (4.3x). Uniform with every op therefore trains at about half the fair rate:
about 17 min of training per CPU-small run, where the arithmetic below, made before
uniform was measured, counts 9.1.

Arithmetic per CPU-small run: training 3 seeds x 90,000 images / 493 images/s = 9.1
min; scoring 200 archs x 3 seeds / 5.4 archs/s = 1.9 min (729 archs: 6.8 min); the
trajectory's 4 x 40 archs x 3 seeds 1.5 min; compiles about 1 min: about 13.5 min. A
CPU-medium run: 34 + 5.9 + 4.7 + 1 = 46 min. The queue (8 small runs, one of them
scored whole: 9.1 + 6.8 + 1.5 + 1 = 18.4 min, and 2 medium runs): 7 x 13.5 + 18.4 +
2 x 46 = 205 min, about 3.4 hours of an otherwise idle machine. The sweep launcher
resumes it where it stopped (finished runs are skipped, unfinished ones resume from
their checkpoints).

python -m launch.sweep --sweep=configs/sweeps/queue.py --root=runs/cpu \
    --size_config=s=configs/cpu_small.py,m=configs/cpu_medium.py \
    --config.data.path=cifar10.npz
"""
from spos_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.seeds = (0, 1, 2)
  config.model.channels = 8
  config.model.cells_per_stage = 1
  config.train.epochs = 4
  config.train.batch_size = 128
  config.train.precision = 'fp32'  # XLA:CPU has no fast bf16 convolutions
  config.train.steps_per_dispatch = 1  # XLA:CPU runs loops (lax.scan) slowly
  config.train.seed_loop = 'unrolled'  # 3x the images/s of vmapped seeds on XLA:CPU
  config.train.uniform_ops = 'all'  # XLA:CPU runs convolutions in a conditional slowly
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 25
  config.data.train_subset = 22500
  config.data.val_size = 500  # the first 500 of the study's 5k validation images
  config.eval.batch_size = 500
  config.eval.packing = 'single_path'  # on XLA:CPU a fair group costs |O| single paths
  config.eval.top_ns = (10, 25, 50, 100)
  config.eval.random_size = 100
  config.eval.every_epochs = 1
  config.eval.trajectory_size = 40
  return config
