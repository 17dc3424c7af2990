"""A training stage's saved state (engine/state.py) and stopping on a signal
(engine/interrupt.py): a run stopped anywhere, even mid-epoch, and resumed from its state ends
with exactly the weights of a run that was never stopped."""

import signal

import pytest
import torch
from omegaconf import OmegaConf
from stopping_losses import Crash, SignalAt

from kdcli.config.build import training_recipe
from kdcli.data.digits import Digits
from kdcli.engine.interrupt import Interrupted, handle_signals, pass_on
from kdcli.engine.loop import Job, Recipe, Trainee, fit
from kdcli.engine.state import Parts, Position, TrainState
from kdcli.losses import CrossEntropy
from kdcli.models.mlp import MLP
from kdcli.tasks.classify import TASK

CPU = torch.device("cpu")
EPOCHS = 3


def recipe() -> Recipe:
    stage = OmegaConf.create(
        {
            "epochs": EPOCHS,
            "batch_size": 64,
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05,
                          "momentum": 0.9},
            "scheduler": {"_target_": "kdcli.engine.lr_schedule.WarmupCosine", "_partial_": True,
                          "epochs": EPOCHS, "warmup_epochs": 1},
        }
    )  # fmt: skip
    return training_recipe(stage, "student")


@pytest.fixture(scope="module")
def digits():
    return Digits().load()  # augmented: the resumed epoch must draw the same views


def model(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(10, 1, 8, hidden=[32], dropout=0.3)  # dropout draws from the global RNG


def train(digits, net, loss, state=None):
    torch.manual_seed(123)  # the RNG state training starts from
    trainee = Trainee(net, digits.train_loader(64, 0), loss)
    return fit(trainee, recipe(), Job("s", TASK, CPU, state=state))


@pytest.fixture(scope="module")
def straight(digits):
    net = model(0)
    train(digits, net, CrossEntropy())
    return net


def assert_same_weights(a: MLP, b: MLP) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_mid_epoch_saves_the_state_and_a_resume_ends_identical(digits, straight, tmp_path,
                                                                         signum):  # fmt: skip
    path = tmp_path / "s.state.pt"
    stopped = model(0)
    with handle_signals(), pytest.raises(Interrupted) as caught:
        train(digits, stopped, SignalAt(30, signum), TrainState(path))
    assert caught.value.exit_code == 128 + signum
    assert caught.value.saved == path and "epoch 2, batch" in caught.value.position
    saved = torch.load(path, weights_only=True)  # plain tensors and values, no pickles
    assert (saved["epoch"], saved["step"]) == (1, 30 - len(digits.train_loader(64, 0)))

    resumed = model(1)  # a new process: other weights, overwritten by the state
    torch.manual_seed(999)  # and another RNG state, restored from the file
    trainee = Trainee(resumed, digits.train_loader(64, 0), CrossEntropy())
    result = fit(trainee, recipe(), Job("s", TASK, CPU, state=TrainState(path)))
    assert result.resumed_from == caught.value.position.removeprefix("s, ")
    assert_same_weights(straight, resumed)
    assert not path.exists(), "a finished stage removes its state"


def test_a_state_saved_every_few_seconds_within_an_epoch_resumes_mid_epoch(digits, straight,
                                                                            tmp_path):  # fmt: skip
    path = tmp_path / "s.state.pt"
    state = TrainState(path, every_s=0.0)  # after every step
    saved = []
    save = state.save

    def counted(parts, position, write=True):
        saved.append(position.step)
        save(parts, position, write)

    state.save = counted
    stopped = model(0)
    with pytest.raises(KeyboardInterrupt):  # the process dies without a handler (kill -9)
        train(digits, stopped, Crash(at=17), state)
    assert saved[-1] == 16 and torch.load(path, weights_only=True)["step"] == 16
    resumed = model(1)
    train(digits, resumed, CrossEntropy(), TrainState(path))
    assert_same_weights(straight, resumed)


@pytest.mark.parametrize(
    "content", [b"", b"\x00garbage" * 100, b"PK\x03\x04 a torn zip"], ids=["empty", "bytes", "torn"]
)
def test_a_corrupt_state_is_ignored_with_a_warning_and_training_starts_afresh(
    digits, straight, tmp_path, caplog, content
):
    path = tmp_path / "s.state.pt"
    path.write_bytes(content)
    net = model(0)
    result = train(digits, net, CrossEntropy(), TrainState(path))
    assert "ignoring the saved training state" in caplog.text and str(path) in caplog.text
    assert result.resumed_from is None
    assert_same_weights(straight, net)


def test_a_state_of_another_model_is_ignored_and_leaves_the_model_untouched(tmp_path, caplog):
    path = tmp_path / "s.state.pt"
    other = MLP(10, 1, 8, hidden=[16])
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    TrainState(path).save(Parts(other, CrossEntropy(), optimizer, scheduler), Position(1, 3))

    net = MLP(10, 1, 8, hidden=[32])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    parts = Parts(net, CrossEntropy(), optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1))
    assert TrainState(path).resume(parts, CPU) is None
    assert "ignoring the saved training state" in caplog.text
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not path.exists()


def test_a_signal_outside_the_training_loop_stops_at_once():
    with handle_signals(), pytest.raises(Interrupted) as caught:
        signal.raise_signal(signal.SIGTERM)
    assert caught.value.exit_code == 143 and caught.value.saved is None
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler is put back"


def test_a_handler_that_was_there_before_is_called_after_the_save(digits, tmp_path):
    """Under submitit a USR2 handler requeues the job: kd saves first, then passes it on."""
    calls = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with handle_signals(), pytest.raises(Interrupted) as caught:
            train(digits, model(0), SignalAt(5, signal.SIGUSR2), TrainState(tmp_path / "s.pt"))
        # checked after the block: in it, nothing after the raising call runs
        assert calls == [], "not before the state is saved"
        assert caught.value.saved.is_file()
        with handle_signals():
            pass_on(caught.value.signum)
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)
