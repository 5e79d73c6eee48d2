"""SSD as an ART postprocessor: answers like ssdlib.BlackBox, batch = rows one by one, logits, fit, set_params, and
which ART attacks see it (a black-box extraction attack does; MIFace's gradients do not). Skipped without ART."""
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("art", reason="the optional extra ssdlib[art] (adversarial-robustness-toolbox) is not installed")

from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier  # noqa: E402

from ssdlib import SSD, BlackBox, estimate_q_table  # noqa: E402
from ssdlib.integrations.art import SSDPostprocessor, probability_rows  # noqa: E402

C, SHAPE = 6, (3, 4, 4)


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), C)).eval()


def images(n, seed=1):
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed))


def softmax_fn(model):
    def predict(x):
        with torch.no_grad():
            return torch.softmax(model(torch.as_tensor(x, dtype=torch.float32)), -1).numpy()
    return predict


@pytest.fixture(scope="module")
def fitted():
    """A toy model, an SSD fitted on its held-out predictions, and the same SSD as an ART postprocessor."""
    model = toy_model()
    x = images(200, seed=2)
    with torch.no_grad():
        probs = torch.softmax(model(x) * 3, -1)  # sharper rows than the raw toy logits
    labels = probs.argmax(-1)
    ssd = SSD.from_predictions(probs, labels, T=0.5, eps=0.5, randomness="hash", missing="uniform")
    return model, ssd, SSDPostprocessor.from_ssd(ssd)


def test_blackboxclassifier_answers_like_ssdlib_blackbox(fitted):
    model, ssd, post = fitted
    x = images(64)
    # the same batches on both sides: a model's last bits can depend on the batch, and the draws hash the bits
    ours = BlackBox(model, lambda probs, inputs=None: ssd(probs, inputs=probs), batch_size=16)(x).numpy()
    art = BlackBoxClassifier(softmax_fn(model), SHAPE, C, postprocessing_defences=[post]).predict(x.numpy(),
                                                                                             batch_size=16)
    plain = softmax_fn(model)(x.numpy())
    assert art.dtype == np.float32 and art.shape == (64, C)
    np.testing.assert_allclose(art, ours, atol=1e-5)
    assert np.abs(art - plain).sum(-1).max() > 1e-3  # the defense acted
    radius = ssd.radius(torch.from_numpy(plain).double()).numpy()
    assert (np.abs(art - plain).sum(-1) <= radius + 1e-5).all()


def test_batch_answers_as_rows_one_by_one_and_repeats(fitted):
    model, _, post = fitted
    preds = softmax_fn(model)(images(40).numpy())
    batch = post(preds)
    rows = np.concatenate([post(preds[i:i + 1]) for i in range(len(preds))])
    np.testing.assert_allclose(batch, rows, atol=1e-7)
    np.testing.assert_array_equal(post(preds), batch)  # a repeated query is answered the same
    other = SSDPostprocessor.from_ssd(SSD(post.q_table, T=0.5, eps=0.5, hash_key=b"another key"))
    assert not np.allclose(other(preds), batch)  # the draws depend on the key, not only on the rows


def test_logits_are_detected_and_softmaxed_or_refused(fitted):
    model, ssd, post = fitted
    x = images(16)
    with torch.no_grad():
        logits = model(x).numpy()
    assert not probability_rows(logits).any() and probability_rows(softmax_fn(model)(x.numpy())).all()
    art = PyTorchClassifier(model, nn.CrossEntropyLoss(), SHAPE, C, postprocessing_defences=[post])
    answers = art.predict(x.numpy())
    np.testing.assert_allclose(answers, post(logits), atol=1e-6)
    # SSD of the softmax rows, each draw seeded by the logit row as ART handed it over
    expected = ssd(torch.softmax(torch.from_numpy(logits).double(), -1), inputs=torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(answers, expected, atol=1e-5)
    mixed = np.concatenate([logits[:4], softmax_fn(model)(x.numpy())[4:]])
    assert np.allclose(post(mixed).sum(-1), 1, atol=1e-5)
    strict = SSDPostprocessor.from_ssd(SSD(post.q_table, T=0.5, eps=0.5), logits="raise")
    with pytest.raises(ValueError, match="not probability vectors"):
        strict(mixed)
    with pytest.raises(ValueError, match="classes"):
        post(np.full((2, C + 1), 1 / (C + 1), dtype=np.float32))


def test_fit_estimates_q_and_unfitted_refuses():
    probs = torch.softmax(torch.randn(120, C, generator=torch.Generator().manual_seed(3)) * 3, -1)
    labels = torch.arange(120) % C
    post = SSDPostprocessor(T=0.3, eps=1.0)
    assert not post.is_fitted
    with pytest.raises(RuntimeError, match="ART never calls fit"):
        post(probs.numpy())
    post.fit(probs.numpy().astype(np.float32), np.eye(C)[labels.numpy()])  # one-hot labels
    assert post.is_fitted
    expected = estimate_q_table(probs.double(), labels, C)
    torch.testing.assert_close(post.q_table, expected, atol=1e-6, rtol=0)
    by_index = SSDPostprocessor(T=0.3)
    by_index.fit(probs.numpy(), labels.numpy())
    torch.testing.assert_close(by_index.q_table, post.q_table)
    with pytest.raises(ValueError, match="labels y"):
        by_index.fit(probs.numpy())


def test_set_params(fitted):
    model, _, post = fitted
    preds = softmax_fn(model)(images(20).numpy())
    post = SSDPostprocessor.from_ssd(SSD(post.q_table, T=0.5, eps=0.5))
    post.set_params(eps=0.0)  # a zero radius: the rows are released unchanged
    np.testing.assert_allclose(post(preds), preds, atol=1e-6)
    post.set_params(eps=2.0, T=0.0, entropy="nats")
    assert (post.T, post.eps, post.entropy) == (0.0, 2.0, "nats")
    assert np.abs(post(preds) - preds).sum(-1).max() > 1e-3
    with pytest.raises(ValueError, match="eps"):
        post.set_params(eps=-1.0)
    with pytest.raises(ValueError, match="entropy"):
        SSDPostprocessor(T=0.1, entropy="bits")


def test_copycat_extraction_queries_through_ssd(fitted):
    """One of ART's black-box attacks (CopycatCNN with probabilities) runs against the SSD-defended API: every row
    it trains its thief on went through the postprocessor."""
    from art.attacks.extraction import CopycatCNN

    model, ssd, post = fitted
    seen = []

    class Spy(SSDPostprocessor):
        def __call__(self, preds):
            seen.append(len(preds))
            return super().__call__(preds)

    spy = Spy.from_ssd(ssd)
    victim = BlackBoxClassifier(softmax_fn(model), SHAPE, C, clip_values=(0.0, 1.0), postprocessing_defences=[spy])
    thief_model = toy_model(seed=5)
    thief = PyTorchClassifier(thief_model, nn.CrossEntropyLoss(), SHAPE, C, clip_values=(0.0, 1.0),
                              optimizer=torch.optim.SGD(thief_model.parameters(), lr=0.5))
    attack = CopycatCNN(victim, batch_size_fit=16, batch_size_query=16, nb_epochs=3, nb_stolen=48,
                        use_probability=True)
    stolen = attack.extract(images(48, seed=7).numpy(), thieved_classifier=thief)
    assert sum(seen) == 48
    assert stolen.predict(images(8).numpy()).shape == (8, C)


def test_miface_gradients_never_see_the_postprocessor(fitted):
    """ART skips postprocessing in gradients: MIFace through PyTorchClassifier inverts the same images with and
    without SSD attached (threshold 1 keeps every row active, so its predict-based stopping rule is moot)."""
    from art.attacks.inference.model_inversion import MIFace

    model, ssd, post = fitted
    model = nn.Sequential(model, nn.Softmax(-1))  # probabilities, so the stopping rule's cost stays in [0, 1]
    x = images(4, seed=9).numpy()
    plain = PyTorchClassifier(model, nn.CrossEntropyLoss(), SHAPE, C, clip_values=(0.0, 1.0))
    defended = PyTorchClassifier(model, nn.CrossEntropyLoss(), SHAPE, C, clip_values=(0.0, 1.0),
                                 postprocessing_defences=[post])
    np.testing.assert_array_equal(plain.class_gradient(x, label=1), defended.class_gradient(x, label=1))
    assert not np.allclose(plain.predict(x), defended.predict(x))  # predict does see SSD
    y = np.arange(4) % C
    runs = [MIFace(c, max_iter=5, window_length=100, threshold=1.0, learning_rate=0.1, verbose=False).infer(None, y)
            for c in (plain, defended)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.abs(runs[0]).sum() > 0  # the inversion moved


def test_readme_example_runs():
    """The README's example of SSD inside ART runs as written and answers defended probabilities."""
    from ssdlib.utils import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## SSD inside IBM's Adversarial Robustness Toolbox", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    answers = scope["answers"]
    assert answers.shape == (5, 10) and np.allclose(answers.sum(-1), 1, atol=1e-5)
    assert scope["ssd"].eps == 0.5 and scope["ssd"].is_fitted
