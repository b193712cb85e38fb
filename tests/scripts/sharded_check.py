"""Data parallelism on 8 devices matches one device: training, search, generation, RL.

Run with 8 forced CPU devices in one process, or as several processes (one per "host")
with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set: 8 devices in
all. Each check runs the same work unsharded on one local device and split over a
`data` mesh of all 8, and prints `name=value` lines for tests/test_sharding.py.
"""

import functools

from metacot_jax import scale

scale.initialize_distributed()  # before anything touches a device

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from metacot_jax.data import examples  # noqa: E402
from metacot_jax.data.tokenizer import Tokenizer  # noqa: E402
from metacot_jax.metacot import evaluate as metacot_eval  # noqa: E402
from metacot_jax.models import ModelConfig  # noqa: E402
from metacot_jax.search import baselines, mcts, step_mdp  # noqa: E402
from metacot_jax.search import evaluate as search_eval  # noqa: E402
from metacot_jax.search.greedy import generate  # noqa: E402
from metacot_jax.search.step_parser import StepFormat  # noqa: E402
from metacot_jax.tasks import game24  # noqa: E402
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step, train  # noqa: E402
from metacot_jax.train.rl import RLConfig  # noqa: E402
from metacot_jax.train.rl_loop import train_rl  # noqa: E402

assert jax.device_count() == 8, jax.devices()
print(f"processes={jax.process_count()}")
tok = Tokenizer()
model = ModelConfig(vocab_size=tok.vocab_size, max_len=96, d_model=32, num_layers=1, num_heads=2,
                    d_ff=64)
problems = [game24.make(p) for p in game24.solvable_puzzles()[:8]]
data, _ = examples.encode(tok, examples.cot_examples(problems * 2, 2), 96)
batch = {k: v[:16] for k, v in data.items()}
step = functools.partial(sft_step, config=model)
opt = OptimizerConfig(total_steps=10, warmup_steps=2)
mesh = scale.data_mesh()


def max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in
             zip(jax.tree.leaves(scale.to_host(a)), jax.tree.leaves(scale.to_host(b))))


def mean_diff(a, b):
  x, y = (np.concatenate([v.ravel() for v in jax.tree.leaves(scale.to_host(t))]) for t in (a, b))
  return float(np.mean(np.abs(x - y)))


# Training steps: a batch split over the mesh, params replicated.
single = create_train_state(jax.random.PRNGKey(0), model, opt)
for _ in range(3):
  single, m1 = step(single, batch)
sharded = scale.replicate(create_train_state(jax.random.PRNGKey(0), model, opt), mesh)
for _ in range(3):
  sharded, m8 = step(sharded, scale.shard_batch(batch, mesh))
print(f"max_param_diff={max_diff(single.params, sharded.params):.3g}")
print(f"loss_diff={abs(float(m1['loss']) - float(m8['loss'])):.3g}")
print(f"param_sharding={jax.tree.leaves(sharded.params)[0].sharding}")

# The training loop (what the main job runs): 4 steps of 16 from 32 examples.
loop = functools.partial(train, data=data, step_fn=step, num_steps=4, batch_size=16, seed=0)
one, _ = loop(create_train_state(jax.random.PRNGKey(0), model, opt))
many, _ = loop(create_train_state(jax.random.PRNGKey(0), model, opt), mesh=mesh)
print(f"loop_param_diff={max_diff(one.params, many.params):.3g}")
params = single.params

# Search on raw roots, then through the evaluation loop (5 problems: one chunk of 5 rows
# on one device, the same chunk padded to 8 rows on the mesh).
search = step_mdp.SearchConfig(num_candidates=3, max_step_tokens=20, max_depth=3)
cfg = mcts.MCTSConfig(num_simulations=4, max_num_considered_actions=3, gumbel_scale=0.0)
roots = step_mdp.root_nodes(problems, tok, model, search)
kw = dict(model=model, fmt=StepFormat.from_tokenizer(tok), newline_id=tok.newline_id,
          search=search, cfg=cfg)
one = mcts.run(params, jax.random.PRNGKey(1), jax.tree.map(jnp.asarray, roots), **kw)
many = mcts.run(sharded.params, jax.random.PRNGKey(1), scale.shard_batch(roots, mesh), **kw)
fields = lambda out: scale.to_host((out.answer_tokens, out.nodes, out.tokens_generated))
same = all(np.array_equal(a, b) for a, b in zip(fields(one), fields(many)))
print(f"search_sharding={many.nodes.sharding}")
print(f"same_answers={same}")
method = search_eval.mcts_method(sharded.params, model, tok, search, cfg)
run = functools.partial(search_eval.batched, method, problems[:5], tok, model, search, seed=0)
one, many = run(batch_size=5), run(batch_size=5, mesh=mesh)
print(f"same_search_summary={one == many}")

# Greedy generation (chunks of 3 rows vs the same chunks padded to 8).
gen = functools.partial(generate, sharded.params, model, tok, problems[:5], max_new_tokens=24)
print(f"same_generations={gen(batch_size=3) == gen(batch_size=3, mesh=mesh)}")

# Sample-N (16 rows: no padding, so the same random numbers) and sampled traces.
sample = functools.partial(baselines.sample_n, sharded.params, jax.random.PRNGKey(2), problems,
                           tok, model, 2, 24)
one, many = sample(), sample(mesh=mesh)
print(f"same_samples={one.texts == many.texts and np.array_equal(one.correct, many.correct)}")
print(f"sample_value_diff={float(np.max(np.abs(one.values - many.values))):.3g}")
sampled = functools.partial(metacot_eval.sampled, sharded.params, model, tok, problems,
                            samples=2, max_new_tokens=24, rng=jax.random.PRNGKey(3), batch_size=8)
print(f"same_sampled={sampled() == sampled(mesh=mesh)}")

# RL: rollouts split over the mesh, the update's gradient all-reduced.
prompts = [tok.encode(p.prompt(), bos=True) for p in problems]
rl_cfg = RLConfig(gamma=0.99, group_size=2, max_new_tokens=24)
rl_opt = OptimizerConfig(learning_rate=1e-3, warmup_steps=0, total_steps=2)
rl = lambda **kw: train_rl(
    create_train_state(None, model, rl_opt, params=jax.tree.map(jnp.copy, params)), params,
    model, rl_cfg, prompts, lambda ids, gen, n: (np.arange(len(ids)) % 2.0, n),
    num_updates=2, problems_per_update=8, seed=0, stop_ids=(tok.eos_id,), **kw)[0]
one, many = rl().params, rl(mesh=mesh).params
print(f"rl_param_change={mean_diff(params, one):.3g}")
print(f"rl_param_diff={mean_diff(one, many):.3g}")
