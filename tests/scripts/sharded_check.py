"""Run with 8 forced CPU devices: sharded SFT steps and sharded MCTS match one device.

Prints `max_param_diff=...`, `same_answers=...` lines for tests/test_sharding.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metacot_jax import scale
from metacot_jax.data import examples
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.models import ModelConfig
from metacot_jax.search import mcts, step_mdp
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks import game24
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step

assert jax.device_count() == 8, jax.devices()
tok = Tokenizer()
model = ModelConfig(vocab_size=tok.vocab_size, max_len=96, d_model=32, num_layers=1, num_heads=2,
                    d_ff=64)
problems = [game24.make(p) for p in game24.solvable_puzzles()[:8]]
data, _ = examples.encode(tok, examples.cot_examples(problems * 2, 2), 96)
batch = {k: v[:16] for k, v in data.items()}
step = functools.partial(sft_step, config=model)
opt = OptimizerConfig(total_steps=10, warmup_steps=2)

single = create_train_state(jax.random.PRNGKey(0), model, opt)
for _ in range(3):
  single, m1 = step(single, batch)

mesh = scale.data_mesh()
sharded = scale.replicate(create_train_state(jax.random.PRNGKey(0), model, opt), mesh)
for _ in range(3):
  sharded, m8 = step(sharded, scale.shard_batch(batch, mesh))
diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
           zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)))
print(f"max_param_diff={diff:.3g}")
print(f"loss_diff={abs(float(m1['loss']) - float(m8['loss'])):.3g}")
print(f"param_sharding={jax.tree.leaves(sharded.params)[0].sharding}")

search = step_mdp.SearchConfig(num_candidates=3, max_step_tokens=20, max_depth=3)
cfg = mcts.MCTSConfig(num_simulations=4, max_num_considered_actions=3, gumbel_scale=0.0)
roots = step_mdp.root_nodes(problems, tok, model, search)
kw = dict(model=model, fmt=StepFormat.from_tokenizer(tok), newline_id=tok.newline_id,
          search=search, cfg=cfg)
one = mcts.run(single.params, jax.random.PRNGKey(1), jax.tree.map(jnp.asarray, roots), **kw)
many = mcts.run(sharded.params, jax.random.PRNGKey(1), scale.shard_batch(roots, mesh), **kw)
same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
           zip((one.answer_tokens, one.nodes, one.tokens_generated),
               (many.answer_tokens, many.nodes, many.tokens_generated)))
print(f"search_sharding={many.nodes.sharding}")
print(f"same_answers={same}")
