"""CPU-small: the small super-network's shape at a size two CPU cores can train (C=8, N=1).

The CPU scale of the reproduction queue (REPRODUCTION.md, "CPU scale"): CPU-small for
the `s-*` runs, configs/cpu_medium.py (twice the channels and twice the cells, the
ratio of the paper's small C=32 N=2 to medium C=64 N=4) for the `m-*` runs. The
protocol was fixed before any run of it existed:

- data: real CIFAR-10 (a local .npz, --config.data.path). The split permutes the 50k
  training images with data.split_seed=0 as the study's 45k/5k split does; its first
  500 (the first 500 of the study's 5k validation images) are the validation images
  every arch is scored on, the next 10,000 the training images (data.train_subset);
  3 epochs, so 30,000 training images per seed, each seed in its own order;
- 3 seeds trained at once (vmapped), strictly fair groups of |O| micro-batches of 128;
- groups: top-10, 25, 50, 100 and a random 100 of the subset; subsets of 729 archs or
  fewer are scored whole (the sweep sets eval.scope='all' for them);
- the ranking trajectory: 40 archs of the subset after every epoch.

Measured on the 2-core machine (benchmarks/throughput.py, fp32, steps_per_dispatch 1,
other jobs running at low priority), train step of 3 seeds at batch 64 / 128:
74 / 122 images/s (seeds vmapped), 45 / 39 images/s (one seed after another), so
batch 128 with vmapped seeds. Compile about 12-40 s.
Arithmetic per CPU-small run: 3 seeds x 30,000 images / 122 images/s = 12.3 min of
training; scoring about 250 archs x 3 seeds and the trajectory's 3 x 40 x 3 archs on
500 images (rate in configs/cpu_medium.py's notes) adds some minutes. The queue of
10 runs takes several hours on two cores: the sweep launcher resumes it where it
stopped (finished runs are skipped, unfinished ones resume from their checkpoints).

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
  config.train.epochs = 3
  config.train.batch_size = 128
  config.train.precision = 'fp32'  # XLA:CPU has no fast bf16 convolutions
  config.train.steps_per_dispatch = 1  # XLA:CPU runs loops (lax.scan) slowly
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 25
  config.data.train_subset = 10000
  config.data.val_size = 500  # the first 500 of the study's 5k validation images
  config.eval.batch_size = 500
  config.eval.groups_per_call = 2  # XLA:CPU caches favour small calls
  config.eval.top_ns = (10, 25, 50, 100)
  config.eval.random_size = 100
  config.eval.every_epochs = 1
  config.eval.trajectory_size = 40
  return config
