import pytest

from bench.data.datasets import DATASETS
from bench.sdk.method import CAPABILITIES, PROFILES, Method
from bench.sdk.registry import Registry, UnknownNameError
from methods import METHODS
from metrics import METRICS


def test_unknown_names_list_valid_ones_and_suggest():
    with pytest.raises(UnknownNameError) as info:
        METHODS.get("vaee")
    message = str(info.value)
    assert "Did you mean 'vae'?" in message
    assert "vae" in message.split("Valid methods:")[1]


def test_hyphen_and_underscore_spellings_resolve_to_one_entry():
    assert DATASETS.get("fashion_mnist") is DATASETS.get("fashion-mnist")
    assert METRICS.get("support-nn-mse") is METRICS.get("support_nn_mse")


def test_resolve_all_and_lists():
    assert METHODS.resolve("all") == METHODS.names()
    assert METRICS.resolve("ssim, mse,ssim") == ["ssim", "mse"]
    with pytest.raises(UnknownNameError):
        METRICS.resolve("mse,fidd")


@pytest.mark.parametrize("registry", [METHODS, METRICS], ids=lambda r: r.kind)
def test_names_read_from_the_module_files_are_the_names_importing_them_registers(registry):
    # The CLI checks names against the files before torch is imported; a module that registered under
    # another name, or registered nothing, would make that early answer wrong.
    assert registry.names_on_disk() == registry.names()


def test_the_early_name_check_agrees_with_resolve():
    METHODS.check_names("vae, imle_pretrained,support-augment")
    METHODS.check_names("all")
    for spec in ("vae,vaee", "", " , "):
        with pytest.raises(UnknownNameError):
            METHODS.check_names(spec)
        with pytest.raises(UnknownNameError):
            METHODS.resolve(spec)


@pytest.mark.parametrize("name", METHODS.names())
def test_registered_methods_follow_the_protocol(name):
    cls = METHODS.get(name)
    assert issubclass(cls, Method)
    assert cls.__module__ == f"methods.{name.replace('-', '_')}"
    assert set(PROFILES) <= set(cls.profiles)
    for capability in cls.capabilities:
        assert capability in CAPABILITIES
    assert cls.reference and cls.title


@pytest.mark.parametrize("name", METRICS.names())
def test_registered_metrics_carry_metadata(name):
    metric = METRICS.get(name)
    assert metric.name == name
    assert metric.higher_is_better in (True, False, None)
    assert isinstance(metric.needs, frozenset)
    assert metric.version and metric.reference and metric.definition


def test_method_missing_a_declared_capability_is_refused():
    class Broken(Method):
        Config = METHODS.get("vae").Config
        Budget = METHODS.get("vae").Budget
        profiles = METHODS.get("vae").profiles
        capabilities = frozenset({"log_likelihood"})

        def fit(self, task, budget, seed):
            pass

        def sample(self, n, generator):
            pass

    with pytest.raises(TypeError, match="log_likelihood"):
        Broken.validate_definition("broken")


def test_duplicate_registration_is_refused():
    registry = Registry("thing", "methods")
    registry.register(object(), "x.alpha")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(object(), "y.alpha")


def test_an_unknown_name_error_survives_the_trip_back_from_a_worker_process():
    import pickle

    error = UnknownNameError("dataset", "mnits", ["mnist", "omniglot"])
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is UnknownNameError and str(back) == str(error) and "Did you mean 'mnist'" in str(back)
    assert (back.kind, back.name, back.valid) == ("dataset", "mnits", ["mnist", "omniglot"])
