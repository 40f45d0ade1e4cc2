"""Every registered baseline trains on a small real stream (sklearn digits); the registry
checks keys and types, finds entry-point plugins, and lists strategies without Avalanche."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cil.data import ImageDataset, load_dataset
from cil import testing
from cil.config import TrainingConfig
from cil.errors import UserError
from cil.strategies import registry
from cil.strategies.registry import StrategyContext

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified:UserWarning")

ROOT = Path(__file__).resolve().parent.parent
N_CLASSES = 6  # digits 0..5, three experiences of two classes

# Strategies that other modules own and test themselves.
OTHER_MODULES = {"cil.strategies.generative"}

# Small buffers so that every strategy runs in about a second; a strategy missing here runs
# with its defaults.
SMALL = {
    "replay": {"mem_size": 30},
    "gdumb": {"mem_size": 150},
    "der": {"mem_size": 30},
    "gem": {"patterns_per_exp": 20},
    "agem": {"patterns_per_exp": 20, "sample_size": 20},
    "icarl": {"memory_size": 60},
    "slda": {"features": "pixels"},
    "randumb": {"n_features": 512},
    "vae_gc": {"iterations": 150, "importance_samples": 20},
}


def _own_strategies() -> list[str]:
    return [n for n in registry.available() if registry.get(n).module not in OTHER_MODULES]


@pytest.fixture(scope="module")
def small_digits() -> ImageDataset:
    """Digits 0..5 (train and test splits of those classes): three experiences of two classes."""
    return testing.tiny_dataset(N_CLASSES)


def _stream(ds: ImageDataset):
    return testing.tiny_stream(dataset=ds)


def _seed(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _context(ds: ImageDataset, **overrides) -> StrategyContext:
    return testing.context(ds, **overrides)


def _experience_accuracies(metrics: dict, n_exp: int) -> list[float]:
    """Accuracy per test experience from Avalanche's eval() dict, whatever the key style."""
    out = []
    for j in range(n_exp):
        keys = [k for k in metrics if k.startswith("Top1_Acc_Exp/") and k.endswith(f"Exp{j:03d}")]
        assert len(keys) == 1, f"no unique accuracy for experience {j}: {sorted(metrics)}"
        out.append(float(metrics[keys[0]]))
    return out


def _train_eval(strategy, stream) -> list[list[float]]:
    """Accuracy matrix R[i][j]: test experience j after training experience i."""
    rows = []
    for exp in stream.benchmark.train_stream:
        strategy.train(exp)
        rows.append(_experience_accuracies(strategy.eval(stream.benchmark.test_stream), stream.n_experiences))
    return rows


def test_baselines_are_registered():
    names = set(registry.available())
    expected = {"naive", "cumulative", "ewc", "si", "lwf", "replay", "gem", "agem", "icarl", "gdumb", "der", "slda"}
    assert expected <= names
    for name in expected:
        spec = registry.get(name)
        assert spec.help
        doc = (spec.builder.__doc__ or "").strip().splitlines()
        assert doc and re.search(r"\b(19|20)\d\d\b", doc[0] + " " + " ".join(doc[1:2])), \
            f"{name}: the docstring's first line should name the method and its paper"


@pytest.mark.parametrize("name", _own_strategies())
def test_strategy_trains_on_a_real_stream(name, small_digits):
    stream = _stream(small_digits)
    _seed(0)
    strategy = registry.build(name, _context(small_digits), SMALL.get(name, {}))
    R = _train_eval(strategy, stream)
    assert len(R) == stream.n_experiences
    for i, row in enumerate(R):
        assert all(0.0 <= a <= 1.0 for a in row)
        # Having just trained on experience i, the model tells its classes apart better
        # than guessing among all six classes would.
        assert row[i] > 1.0 / N_CLASSES, f"{name}: accuracy {row[i]:.2f} on the experience just trained"


def test_naive_forgets_and_cumulative_does_not(small_digits):
    stream = _stream(small_digits)
    runs = {}
    for name in ("naive", "cumulative"):
        _seed(0)
        strategy = registry.build(name, _context(small_digits, epochs=5))
        runs[name] = _train_eval(strategy, stream)
    naive, cumulative = runs["naive"], runs["cumulative"]
    # Fine-tuning learns experience 0, then loses most of it by the end of the stream.
    assert naive[0][0] > 0.8
    assert naive[-1][0] < naive[0][0] - 0.5
    # Joint training on everything seen keeps it.
    assert cumulative[-1][0] > 0.8
    assert cumulative[-1][0] > naive[-1][0] + 0.5
    assert np.mean(cumulative[-1]) > np.mean(naive[-1])


def test_si_protects_old_weights_on_cpu(small_digits):
    """Avalanche's SI plugin keeps its weight snapshots as views on CPU, so its penalty was
    always zero and SI trained exactly as naive; with copies, a strong penalty holds on to
    experience 0 where fine-tuning loses it."""
    stream = _stream(small_digits)
    runs = {}
    for name, params in (("naive", {}), ("si", {"si_lambda": 10000.0})):
        _seed(0)
        strategy = registry.build(name, _context(small_digits, epochs=5), params)
        runs[name] = _train_eval(strategy, stream)
        if name == "si":
            plugin = next(p for p in strategy.plugins if type(p).__name__ == "CopyingSynapticIntelligencePlugin")
            live = {p.data_ptr() for p in strategy.model.parameters()}
            assert not {a.data.data_ptr() for a in plugin.ewc_data[0].values()} & live
            assert sum(float(w.data.abs().sum()) for w in plugin.ewc_data[1].values()) > 0  # importance
    naive, si = runs["naive"], runs["si"]
    assert naive[-1][0] < naive[0][0] - 0.5
    assert si[-1][0] > naive[-1][0] + 0.3


def test_registry_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(UserError) as exc:
        registry.validate_params("ewc", {"lambda": 10.0})
    msg = str(exc.value)
    assert "'lambda'" in msg and "allowed keys" in msg
    for key in ("ewc_lambda", "mode", "decay_factor"):
        assert key in msg

    with pytest.raises(UserError, match="ewc_lambda"):
        registry.validate_params("ewc", {"ewc_lambda": "large"})
    with pytest.raises(UserError, match="mem_size"):
        registry.validate_params("replay", {"mem_size": 2.5})
    with pytest.raises(UserError, match="mode"):
        registry.validate_params("ewc", {"mode": "sometimes"})
    with pytest.raises(UserError, match="alpha"):
        registry.validate_params("lwf", {"alpha": "strong"})
    with pytest.raises(UserError, match="unknown strategy 'ewk'"):
        registry.validate_params("ewk", {})
    # Integers are fine where a float is asked for, lists where a list is allowed.
    assert registry.validate_params("ewc", {"ewc_lambda": 100})["ewc_lambda"] == 100.0
    assert registry.validate_params("lwf", {"alpha": [0, 1]})["alpha"] == [0.0, 1.0]


@pytest.mark.parametrize("name, params", [
    ("ewc", {"mode": "online"}),  # online EWC needs a decay factor
    ("ewc", {"decay_factor": 0.5}),  # ... and separate EWC has none
    ("replay", {"mem_size": 0}),
    ("replay", {"batch_size_mem": 0}),
    ("gdumb", {"mem_size": -1}),
    ("icarl", {"memory_size": 0}),
    ("agem", {"sample_size": 0}),
    ("lwf", {"alpha": []}),
    ("slda", {"shrinkage": 2.0}),
])
def test_builders_reject_meaningless_values(name, params, small_digits):
    with pytest.raises(UserError, match=name):
        registry.build(name, _context(small_digits), params)


def test_replay_takes_the_number_of_buffer_samples_per_step(small_digits):
    from avalanche.training.plugins import ReplayPlugin

    _seed(0)
    strategy = registry.build("replay", _context(small_digits), {"mem_size": 30, "batch_size_mem": 8})
    (plugin,) = [p for p in strategy.plugins if isinstance(p, ReplayPlugin)]
    assert plugin.batch_size_mem == 8 and plugin.mem_size == 30
    assert len(_train_eval(strategy, _stream(small_digits))) == 3
    default = registry.build("replay", _context(small_digits), {"mem_size": 30})
    assert [p.batch_size_mem for p in default.plugins if isinstance(p, ReplayPlugin)] == [None]


def test_lwf_alpha_schedule_outlasts_its_list(small_digits):
    """A per-experience alpha list shorter than the stream repeats its last value."""
    from cil.strategies.regularisation import _PerExperience

    alphas = _PerExperience([0.0, 2.0])
    assert [alphas[i] for i in range(4)] == [0.0, 2.0, 2.0, 2.0]
    stream = _stream(small_digits)
    _seed(0)
    strategy = registry.build("lwf", _context(small_digits), {"alpha": [0.0, 1.0]})
    assert len(_train_eval(strategy, stream)) == 3  # three experiences, two alphas


def test_listing_strategies_does_not_import_avalanche():
    code = ("import sys, cil.strategies.registry as r; names = r.available(); "
            "assert 'naive' in names, names; "
            "assert 'avalanche' not in sys.modules, 'avalanche imported while listing'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


@pytest.fixture
def fresh_registry(monkeypatch):
    """Discovery runs again on a copy of the registry; the real one is restored afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_discovered", False)
    return registry


def test_entry_point_plugin_is_discovered(fresh_registry, tmp_path, monkeypatch):
    """An installed distribution's ``cil.strategies`` entry point is loaded by discovery."""
    dist = tmp_path / "cil_plugin_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cil-plugin-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[cil.strategies]\nlower_lr_naive = cil_plugin_example.strategies\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugin_example"))
    for mod in [m for m in sys.modules if m.startswith("cil_plugin_example")]:
        monkeypatch.delitem(sys.modules, mod)

    assert "lower_lr_naive" not in fresh_registry._REGISTRY
    assert "lower_lr_naive" in fresh_registry.available()
    spec = fresh_registry.get("lower_lr_naive")
    assert spec.module == "cil_plugin_example.strategies"
    assert fresh_registry.validate_params("lower_lr_naive", {"lr_scale": 1}) == {"lr_scale": 1.0}
    strategy = fresh_registry.build("lower_lr_naive", StrategyContext(n_classes=3, image_shape=(1, 8, 8), training=TrainingConfig(lr=0.02)))
    assert strategy.optimizer.param_groups[0]["lr"] == pytest.approx(0.002)


def test_broken_plugin_is_a_user_error(fresh_registry, tmp_path, monkeypatch):
    dist = tmp_path / "cil_broken-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cil-broken\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[cil.strategies]\nbroken = cil_no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="broken"):
        fresh_registry.available()


def test_plugin_cannot_replace_a_builtin(fresh_registry, tmp_path, monkeypatch):
    (tmp_path / "cil_shadow_plugin.py").write_text(textwrap.dedent('''
        from cil.strategies.registry import register

        @register("naive")
        def build_other_naive(ctx):
            """Not the real naive."""
    '''))
    dist = tmp_path / "cil_shadow-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cil-shadow\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[cil.strategies]\nshadow = cil_shadow_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cil_shadow_plugin", raising=False)
    builtin = fresh_registry._REGISTRY["naive"].builder  # get() would run discovery already
    with pytest.raises(UserError, match="registered twice"):
        fresh_registry.available()
    assert fresh_registry._REGISTRY["naive"].builder is builtin


def _doc_example_module(name: str = "replay_balanced") -> types.ModuleType:
    """Run the doc's code block that starts ``# cil/strategies/<name>.py`` as that module."""
    text = (ROOT / "docs" / "adding_a_strategy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    code = next(b for b in blocks if b.startswith(f"# cil/strategies/{name}.py"))
    module = types.ModuleType(f"cil.strategies.{name}")
    exec(compile(code, "docs/adding_a_strategy.md", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("name, params", [("replay_balanced", {"mem_size": 30}), ("ncm_cosine", {"scale": 16.0})])
def test_both_doc_examples_run_class_and_task_incremental(fresh_registry, name, params):
    """Each shape of the doc's contract, built from the page and run as a protocol cell runs
    (cil.testing), class-incremental and task-incremental."""
    fresh_registry.available()
    _doc_example_module(name)
    ci = testing.train_and_evaluate(name, params)
    ti = testing.train_and_evaluate(name, params, task_incremental=True)
    for R in (ci, ti):
        assert len(R) == 3 and all(0.0 <= a <= 1.0 for row in R for a in row)
        assert R[-1][-1] > 0.5  # the last experience, just learnt
    # Task-incremental evaluation chooses between the experience's two classes only: never worse.
    assert all(t >= c for t, c in zip(ti[-1], ci[-1])) and sum(ti[-1]) > sum(ci[-1])


def test_doc_examples_snippet_of_cil_testing_runs(fresh_registry):
    fresh_registry.available()
    _doc_example_module("ncm_cosine")
    text = (ROOT / "docs" / "adding_a_strategy.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith("from cil import testing"))
    scope: dict = {}
    exec(compile(code, "docs/adding_a_strategy.md", "exec"), scope)
    assert len(scope["R"]) == 3 and scope["ctx"].train_epochs == 1 and scope["stream"].n_experiences == 3
    # what the text after the snippet says of the helpers
    ctx = scope["ctx"]
    assert ctx.n_classes == 6 and ctx.image_shape == (1, 8, 8)
    assert isinstance(scope["R"], list) and all(isinstance(a, float) for row in scope["R"] for a in row)
    assert len(scope["stream"].benchmark.train_stream) == 3 and len(scope["stream"].benchmark.test_stream) == 3


def test_the_docs_minimal_protocol_loads_and_lists_only_the_keys_a_strategy_uses(fresh_registry):
    import yaml

    from cil.config import protocol_from_dict

    fresh_registry.available()
    _doc_example_module("ncm_cosine")
    text = (ROOT / "docs" / "adding_a_strategy.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "try_ncm_cosine" in b)
    protocol = protocol_from_dict(yaml.safe_load(block))
    assert [e.name for e in protocol.strategies] == ["naive", "ncm_cosine"] and protocol.dataset == "digits"
    with pytest.raises(UserError, match=r"allowed keys: scale, strategy, resources, eval_mb_size$"):
        protocol_from_dict({"name": "doc", "strategies": {"ncm_cosine": {"sclae": 16}}})


def test_training_keys_a_strategy_does_not_use_are_rejected():
    from cil.config import protocol_from_dict

    for entry, key in (({"strategy": "varc", "lr": 0.1}, "lr"), ({"strategy": "ncm", "epochs": 5}, "epochs"),
                       ({"strategy": "slda", "optimizer": "sgd"}, "optimizer")):
        with pytest.raises(UserError) as exc:
            protocol_from_dict({"name": "p", "strategies": {"x": entry}})
        assert str(exc.value).startswith(f"strategies.x.{key}: strategy {entry['strategy']!r} does not use")
    # what it uses is fine, and the shared training section is not an entry's override
    protocol_from_dict({"name": "p", "training": {"lr": 0.1}, "strategies": {"x": {"strategy": "ncm",
                                                                                     "eval_mb_size": 64}}})


def test_a_key_without_a_type_hint_is_refused_at_registration(fresh_registry):
    with pytest.raises(ValueError, match="parameter 'k' needs a type hint"):
        @fresh_registry.register("no_hint")
        def build_no_hint(ctx: StrategyContext, *, k=3) -> object:
            """A key the YAML could set to anything (Nobody 2026)."""


def test_the_runner_names_what_a_strategy_returned_instead(fresh_registry, small_digits):
    @fresh_registry.register("returns_a_model")
    def build_returns_a_model(ctx: StrategyContext) -> object:
        """Returns a bare model (Nobody 2026)."""
        return ctx.make_model()

    @fresh_registry.register("drops_the_plugins")
    def build_drops_the_plugins(ctx: StrategyContext) -> object:
        """A template without the runner's plugins (Nobody 2026)."""
        from avalanche.training import Naive

        model = ctx.make_model()
        return Naive(model=model, optimizer=ctx.make_optimizer(model), criterion=torch.nn.CrossEntropyLoss(),
                     evaluator=ctx.evaluator)

    from cil.strategies.base import ScoreClassifier

    class ThreeScores(ScoreClassifier):
        def update(self, images, labels):
            pass

        def scores(self, images):
            return torch.zeros(len(images), 3)

    @fresh_registry.register("three_scores", uses_training=("eval_mb_size",))
    def build_three_scores(ctx: StrategyContext) -> object:
        """Scores three classes of six (Nobody 2026)."""
        return ThreeScores()

    with pytest.raises(UserError, match=r"ThreeScores.scores returned shape \[\d+, 3\] for \d+ images; "
                                        r"expected a tensor \[\d+, 6\]"):
        testing.train_and_evaluate("three_scores")
    with pytest.raises(UserError, match="the builder returned Backbone; expected an Avalanche strategy"):
        fresh_registry.build("returns_a_model", _context(small_digits))
    for task_incremental in (True, False):  # refused in every protocol, not only where it would show
        with pytest.raises(UserError, match="does not apply the runner's plugins"):
            testing.train_and_evaluate("drops_the_plugins", task_incremental=task_incremental)


def test_doc_example_strategy_runs(fresh_registry, small_digits):
    """The one-file example of docs/adding_a_strategy.md registers, validates and trains, and
    its buffer is class-balanced."""
    fresh_registry.available()  # discover the built-ins first, as a real run would
    _doc_example_module()
    assert "replay_balanced" in fresh_registry.available()
    with pytest.raises(UserError, match="allowed keys: mem_size"):
        fresh_registry.validate_params("replay_balanced", {"memsize": 10})

    stream = _stream(small_digits)
    _seed(0)
    strategy = fresh_registry.build("replay_balanced", _context(small_digits), {"mem_size": 18})
    R = _train_eval(strategy, stream)
    assert len(R) == 3
    (plugin,) = [p for p in strategy.plugins if type(p).__name__ == "ReplayPlugin"]
    counts = np.bincount(np.asarray(list(plugin.storage_policy.buffer.targets)), minlength=N_CLASSES)
    assert counts.sum() == 18
    assert counts.min() == counts.max() == 3  # 18 samples over the six classes seen


def test_doc_yaml_entries_are_valid(fresh_registry):
    import yaml

    from cil.config import protocol_from_dict

    fresh_registry.available()
    _doc_example_module()
    text = (ROOT / "docs" / "adding_a_strategy.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "replay_balanced" in b)
    protocol = protocol_from_dict({"name": "doc", **yaml.safe_load(block)})
    entries = {e.name: e for e in protocol.strategies}
    assert entries["replay_balanced_500"].strategy == "replay_balanced"
    assert entries["replay_balanced_500"].params == {"mem_size": 500}
    assert entries["replay_balanced_500"].training.epochs == 5

    # The error shown on the page is the one a misspelt key really raises.
    with pytest.raises(UserError) as exc:
        protocol_from_dict({"name": "doc", "strategies": {
            "replay_balanced_200": {"strategy": "replay_balanced", "memsize": 200}}})
    assert f"error: {exc.value}" in text


def test_plugin_example_matches_the_doc():
    """The plugin package in tests/ is the one the doc describes."""
    text = (ROOT / "docs" / "adding_a_strategy.md").read_text()
    setup_cfg = (ROOT / "tests" / "plugin_example" / "setup.cfg").read_text()
    for line in ("[options.entry_points]", "cil.strategies =", "lower_lr_naive = cil_plugin_example.strategies"):
        assert line in setup_cfg and line in text
    source = (ROOT / "tests" / "plugin_example" / "cil_plugin_example" / "strategies.py").read_text()
    assert textwrap.dedent('@register("lower_lr_naive"') in source
