"""The benchmark scripts at tiny sizes: each runs, prints its figures, and compares like with like.

Speed itself is never asserted here (these machines are shared and noisy); the scripts print
their ratios for a person to read.
"""

import functools
import re

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from experiments import bench_decode, bench_memory, bench_search, bench_train_step
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.models import ModelConfig, SamplingConfig, init_params, sample
from metacot_jax.search import step_mdp
from metacot_jax.search.step_mdp import SearchConfig
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks import game24
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step

TINY_MODEL = ["--d_model", "32", "--num_layers", "1", "--num_heads", "2"]


def figures(text: str) -> dict[str, float]:
  """The `name=number` figures of a benchmark's output."""
  return {m[1]: float(m[2]) for m in re.finditer(r"^([\w\[\]]+)=([-\d.]+)$", text, re.M)}


def test_train_step_measures_both_dtypes_in_one_run(capsys):
  bench_train_step.main(["--batch", "2", "--seq", "16", *TINY_MODEL, "--matmul", "64",
                         "--repeats", "1", "--dtypes", "float32", "bfloat16"])
  out = figures(capsys.readouterr().out)
  assert set(out) == {"ratio[float32]", "ratio[bfloat16]", "speedup"}
  assert all(v > 0 for v in out.values()), out


@pytest.mark.parametrize("dtypes", [["float32", "float32"], ["float32", "bfloat16", "float32"]])
def test_train_step_rejects_repeated_or_many_dtypes(dtypes, capsys):
  with pytest.raises(SystemExit):
    bench_train_step.main(["--dtypes", *dtypes])
  assert "--dtypes takes one dtype or two different ones" in capsys.readouterr().err


def test_recompute_sampler_draws_what_the_cached_sampler_draws():
  """bench_decode's ratio compares the same work: with one key both samplers give the same
  tokens."""
  config = ModelConfig(vocab_size=Tokenizer().vocab_size, max_len=24, d_model=32, num_layers=2,
                       num_heads=2, d_ff=64)
  params = init_params(config, jax.random.PRNGKey(0))
  prompt = jnp.asarray(np.random.default_rng(0).integers(3, config.vocab_size, (3, 8)),
                       jnp.int32)
  rng = jax.random.PRNGKey(1)
  cached = sample(params, rng, prompt, jnp.full((3,), 8, jnp.int32), config=config,
                  sampling=SamplingConfig(16, temperature=1.0)).tokens_BxN
  recomputed = bench_decode.sample_by_recompute(params, rng, prompt, config=config,
                                                new_tokens=16)
  np.testing.assert_array_equal(recomputed, cached)


def test_decode_benchmark_prints_its_ratio(capsys):
  bench_decode.main(["--batch", "2", "--prompt", "4", "--new_tokens", "8", *TINY_MODEL,
                     "--repeats", "1"])
  out = figures(capsys.readouterr().out)
  assert set(out) == {"ratio"} and out["ratio"] > 0


def test_sequential_search_expands_one_node_per_simulation(monkeypatch):
  """As mctx does, so both searches do the same LM work per simulation."""
  child_calls = []
  expand_child = bench_search.expand_child
  monkeypatch.setattr(bench_search, "expand_child",
                      lambda *a, **kw: child_calls.append(1) or expand_child(*a, **kw))
  tok = Tokenizer()
  model = ModelConfig(vocab_size=tok.vocab_size, max_len=64, d_model=32, num_layers=1,
                      num_heads=2, d_ff=64)
  search = SearchConfig(num_candidates=3, max_step_tokens=8)
  kw = dict(model=model, fmt=StepFormat.from_tokenizer(tok), newline_id=tok.newline_id,
            search=search)
  root = step_mdp.root_nodes([game24.make((4, 6, 8, 9))], tok, model, search)
  tree, calls = bench_search.sequential_search(init_params(model, jax.random.PRNGKey(0)), root,
                                                seed=0, num_simulations=5, kw=kw)
  assert calls == 6 and len(child_calls) == 5  # the root's expansion, then one a simulation
  assert tree.visits[0] == 6  # the root's own expansion and one backup per simulation
  expanded = [e is not None for e in tree.embeddings]
  assert sum(expanded) == 1 + np.sum(tree.children >= 0)  # each new child: one expansion
  assert tree.child_visits_NxK[0].sum() == 5


TOY_K = 3


@jax.jit
def toy_node(embedding):
  """A made-up environment: node ids -> (prior logits [K], value, reward, discount), one
  node id in five terminal."""
  e = embedding.astype(jnp.float32)
  terminal = embedding % 5 == 4
  return (2.0 * jnp.sin(e[..., None] * 1.7 + jnp.arange(TOY_K) * 2.3), jnp.cos(e * 0.9),
          jnp.where(terminal, jnp.sin(e), 0.0), jnp.where(terminal, 0.0, 1.0))


def toy_child(embedding, action):
  return embedding * (TOY_K + 1) + action + 1


def test_python_mcts_is_mctx_muzero_policy():
  """The benchmark's sequential search builds the tree mctx builds (PUCT, Q normalised by
  parent and siblings, an invalid root action, a depth limit), so its ratio compares the
  same search."""
  sims, depth = 40, 4
  invalid_K = np.array([False, True, False])
  prior_K, value, _, _ = toy_node(jnp.int32(0))
  root_prior_K = jnp.where(invalid_K, jnp.finfo(jnp.float32).min, prior_K)

  def recurrent_fn(params, rng, action_B, embedding_B):
    del params, rng
    child_B = toy_child(embedding_B, action_B)
    prior_BxK, value_B, reward_B, discount_B = toy_node(child_B)
    return mctx.RecurrentFnOutput(reward=reward_B, discount=discount_B,
                                  prior_logits=prior_BxK, value=value_B), child_B

  tree = mctx.muzero_policy(
      None, jax.random.PRNGKey(0),
      mctx.RootFnOutput(prior_logits=root_prior_K[None], value=value[None],
                        embedding=jnp.zeros(1, jnp.int32)),
      recurrent_fn, sims, invalid_actions=jnp.asarray(invalid_K[None]), max_depth=depth,
      dirichlet_fraction=0.0, temperature=0.0).search_tree

  def child_fn(sim, parent, action):
    child = toy_child(parent, action)
    prior_K, value, reward, discount = jax.device_get(toy_node(jnp.int32(child)))
    return child, prior_K, reward, discount, value

  python = bench_search.PythonMCTS(sims, TOY_K, depth, seed=0)
  python.run(lambda: (0, *jax.device_get((root_prior_K, value))), child_fn)
  np.testing.assert_array_equal(python.children, tree.children_index[0])
  np.testing.assert_array_equal(python.visits, tree.node_visits[0])
  np.testing.assert_allclose(python.values, tree.node_values[0], atol=1e-5)
  assert python.child_visits_NxK[0, 1] == 0 and python.visits[0] == sims + 1
  assert (python.children[:, 0] >= 0).any() and (python.children[:, 2] >= 0).any()
  assert python.parents.max() > 0  # the tree is deeper than one level


def test_search_benchmark_prints_its_ratios(capsys):
  bench_search.main(["--batch", "2", "--num_simulations", "2", "--K", "2",
                     "--sequential_problems", "1", "--max_len", "64", "--max_step_tokens", "8",
                     *TINY_MODEL])
  out = figures(capsys.readouterr().out)
  assert set(out) == {"flops_ratio", "ratio"}
  assert all(v > 0 for v in out.values()), out


def test_micro_batches_lower_a_train_steps_activation_memory():
  """What bench_memory reports for the presets, on a small step: slicing the batch into
  micro-batches shrinks XLA's temporary buffers."""
  config = ModelConfig(vocab_size=Tokenizer().vocab_size, max_len=64, d_model=32,
                       num_layers=2, num_heads=2, d_ff=64)
  state = jax.eval_shape(lambda: create_train_state(jax.random.PRNGKey(0), config,
                                                    OptimizerConfig()))
  batch = {"tokens": jax.ShapeDtypeStruct((32, 64), jnp.int32),
           "loss_mask": jax.ShapeDtypeStruct((32, 64), jnp.float32)}
  step = lambda m: functools.partial(sft_step, config=config, micro_batches=m)
  whole, sliced = (bench_memory.temp_gb(step(m), state, batch) for m in (1, 8))
  assert 0 < sliced < 0.5 * whole, (sliced, whole)


def test_memory_benchmark_reports_every_phase(capsys):
  bench_memory.main(["--preset", "quick"])
  text = capsys.readouterr().out
  assert [line.split()[0] for line in text.splitlines()[1:-1]] == [
      "sft", "metacot_sft", "star.alphazero", "rl"]
  assert figures(text)["ratio"] == pytest.approx(1.0)  # the quick preset has no micro-batches
