"""Gradient mismatch between a plain and a ``@tf.function``-decorated custom loss.

Reproduces the report "decorating a custom loss with tf.function completely changes
training results" (TF 2.2): two losses, ``customloss1`` and ``customloss2``, identical but
for ``@tf.function``, weight one-hot labels by the class weights ``[1, 1, .1]`` and feed
them to ``categorical_crossentropy(from_logits=False)``.  Inside a ``tf.function`` train
step the plain loss gets a different gradient than the decorated one.

Every gradient is compared with the exact gradient computed independently in float64
NumPy from the same weights and data, never with TensorFlow itself.

Contract (see ``bisect/tfbisect/data/result.schema.json``):
  * imports only the standard library, numpy and TensorFlow; runs on TF 2.0-2.21 and
    Python 3.6-3.13, with Keras 2, Keras 3 and ``TF_USE_LEGACY_KERAS=1`` + tf-keras;
  * writes one JSON result document to ``--output``;
  * exits 0 = not reproduced, 1 = reproduced, 125 = cannot be tested here (git bisect run);
  * ``--probe NAME`` (repeatable) runs only the named probes (see ``PROBES``); the verdict is
    then computed over what ran: the gradient probes among them decide, and when none was
    named, the named probes do (any mismatch = reproduced).  An unknown name exits 125 at
    once, before TensorFlow is imported, with a skip document naming the probes there are;
  * around each probe's own work (not the TensorFlow import, not the shared data) it opens
    the tracing window of tfbisect's probe tracer: it calls the builtin
    ``__tfbisect_trace__(True)`` before and ``__tfbisect_trace__(False)`` after (also when
    the probe raises), when the builtin exists; run plainly it does not, and nothing happens.
"""
# No `from __future__ import annotations`, f-string debugging or walrus: this file must run
# unchanged on Python 3.6.
import argparse
import builtins
import contextlib
import hashlib
import json
import os
import platform
import re
import sys
import time
import traceback

SCHEMA_VERSION = 1
SCENARIO_NAME = "gradient_mismatch"
EXIT_GOOD = 0
EXIT_BAD = 1
EXIT_SKIP = 125

N_SAMPLES = 500
N_FEATURES = 1024
N_CLASSES = 3
CLASS_WEIGHTS = [1.0, 1.0, 0.1]
BATCH_SIZE = 50
DATA_SEED = 1234
WEIGHT_SEED = 42

# A float32 gradient of this model agrees with the float64 one to ~1e-6 relative error;
# the bug changes it by tens of percent.  1e-3 separates the two by orders of magnitude
# on every version seen, while tolerating summation-order differences between kernels.
GRADIENT_RTOL = 1e-3
# Loss curves are compared with the class_weight reference trained the same way.  Float32
# training drifts slowly; the wrong gradient moves the curve by far more than 2 %.
CURVE_RTOL = 2e-2
# The configurations a training probe runs, besides the class_weight reference: the report's
# two losses, identical but for @tf.function.
LOSS_CONFIGURATIONS = ("plain", "decorated")
LOSS_NAMES = {"plain": "customloss1", "decorated": "customloss2 @tf.function"}
GRADIENT_PROBES = tuple(
    "gradient_{}_{}".format(mode, loss) for mode in ("eager", "graph") for loss in ("plain", "decorated")
)
# Every probe, in the order they run; `--probe` names a subset.
PROBES = GRADIENT_PROBES + ("training_loop", "fit_report_labels", "fit_shape_robust")
# The probe tracer (bisect/tfbisect/data/probe_tracer.py) installs this builtin; it is absent
# in a plain run.
TRACE_WINDOW = "__tfbisect_trace__"


def _now():
    return time.perf_counter()


@contextlib.contextmanager
def probe_window():
    """The probe tracer's window, open around one probe's own work: only what the probe itself
    runs in TensorFlow is traced, not the import or the data shared by every probe."""
    window = getattr(builtins, TRACE_WINDOW, None)
    if window is None:
        yield
        return
    window(True)
    try:
        yield
    finally:
        window(False)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()


def make_data(np):
    rng = np.random.RandomState(DATA_SEED)
    x = rng.standard_normal((N_SAMPLES, N_FEATURES)).astype("float32")
    y = rng.randint(0, N_CLASSES, size=(N_SAMPLES,)).astype("float32")
    return x, y


def initial_weights(np):
    # Fixed weights from NumPy, not from TF's initialisers: initialisers and their seeding
    # changed between releases, and every version must start from the same point.
    rng = np.random.RandomState(WEIGHT_SEED)
    limit = (6.0 / (N_FEATURES + N_CLASSES)) ** 0.5
    kernel = rng.uniform(-limit, limit, size=(N_FEATURES, N_CLASSES)).astype("float32")
    bias = np.zeros((N_CLASSES,), dtype="float32")
    return kernel, bias


def exact_gradient(np, kernel, bias, x, y):
    """Gradient of mean_i -sum_k t_ik log softmax(x W + b)_ik with t = onehot(y) * w, float64."""
    x64 = x.astype("float64")
    logits = x64.dot(kernel.astype("float64")) + bias.astype("float64")
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    targets = np.eye(N_CLASSES)[y.astype("int64")] * np.asarray(CLASS_WEIGHTS)
    # Keras clips probabilities to [eps, 1 - eps]; none of this data comes near the clip,
    # which `clipped` records so that the reference stays honest.
    eps = 1e-7
    clipped = int(np.sum((probs < eps) | (probs > 1 - eps)))
    d_logits = (probs * targets.sum(axis=1, keepdims=True) - targets) / float(len(x))
    return x64.T.dot(d_logits), d_logits.sum(axis=0), clipped


def compare(np, got, want):
    got = np.asarray(got, dtype="float64")
    diff = np.abs(got - want)
    scale = float(np.max(np.abs(want)))
    max_abs = float(np.max(diff))
    rel = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
    return {"max_abs_error": max_abs, "relative_error": rel, "reference_max_abs": scale}


def keras_info(tf):
    keras = tf.keras
    version = getattr(keras, "__version__", None) or getattr(keras, "version", lambda: None)()
    module = getattr(keras, "__name__", "")
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1" or module.startswith("tf_keras"):
        flavour = "tf-keras"
    elif version and str(version).startswith("3"):
        flavour = "keras3"
    else:
        flavour = "keras2-bundled"
    return {"version": str(version) if version else None, "flavour": flavour, "module": module}


def environment(tf, np):
    env = {
        "tensorflow": tf.__version__,
        "git_version": getattr(getattr(tf, "version", None), "GIT_VERSION", None),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "keras": keras_info(tf),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cuda": None,
        "cudnn": None,
        "devices": [],
        "env_vars": {k: os.environ[k] for k in ("TF_USE_LEGACY_KERAS", "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
    get_build_info = getattr(getattr(tf, "sysconfig", None), "get_build_info", None)
    if get_build_info is not None:
        info = get_build_info()
        env["cuda"] = info.get("cuda_version")
        env["cudnn"] = info.get("cudnn_version")
        env["is_cuda_build"] = bool(info.get("is_cuda_build", False))
    config = tf.config
    lister = getattr(config, "list_physical_devices", None) or config.experimental.list_physical_devices
    env["devices"] = [{"name": d.name, "type": d.device_type} for d in lister()]
    env["gpus"] = [gpu_info(config, d) for d in lister("GPU")]
    env["nvidia_driver"] = nvidia_driver()
    return env


def gpu_info(config, device):
    """The GPU's name and compute capability, as TF reports them (TF 2.3+), else its TF name."""
    entry = {"name": device.name, "compute_capability": None}
    details = getattr(config.experimental, "get_device_details", None)
    if details is not None:
        try:
            found = details(device)
            entry["name"] = str(found.get("device_name") or device.name)
            capability = found.get("compute_capability")
            if capability:
                entry["compute_capability"] = "%d.%d" % tuple(capability)
        except Exception:  # a device TF cannot describe is still a device
            pass
    return entry


def nvidia_driver():
    """The NVIDIA kernel driver's version, where the container sees one (`--gpus`)."""
    try:
        with open("/proc/driver/nvidia/version") as version:
            line = version.readline()
    except OSError:
        return None
    found = re.search(r"Kernel Module\s+(\S+)", line)
    return found.group(1) if found else line.strip()[:100] or None


class Scenario(object):
    def __init__(self, tf, np, epochs, selected=PROBES):
        self.tf = tf
        self.np = np
        self.epochs = epochs
        self.selected = selected
        self.x, self.y = make_data(np)
        self.kernel, self.bias = initial_weights(np)
        self.sample_weights = np.asarray(CLASS_WEIGHTS, dtype="float32")[self.y.astype("int64")]

        def customloss1(y_true, y_pred, sample_weight=None):
            weights = tf.constant([1.0, 1.0, 0.1])[tf.newaxis, ...]
            y_true_one_hot = tf.one_hot(tf.cast(y_true, tf.uint8), 3)
            return tf.reduce_mean(
                tf.keras.losses.categorical_crossentropy(y_true_one_hot * weights, y_pred, from_logits=False)
            )

        @tf.function
        def customloss2(y_true, y_pred, sample_weight=None):
            weights = tf.constant([1.0, 1.0, 0.1])[tf.newaxis, ...]
            y_true_one_hot = tf.one_hot(tf.cast(y_true, tf.uint8), 3)
            return tf.reduce_mean(
                tf.keras.losses.categorical_crossentropy(y_true_one_hot * weights, y_pred, from_logits=False)
            )

        def robust(loss):
            # Keras versions hand y_true to a loss as (N,), (N, 1) or float; flatten it so
            # that one_hot yields (N, 3) whatever the version does.
            def wrapped(y_true, y_pred, sample_weight=None):
                return loss(tf.reshape(y_true, [-1]), y_pred)

            wrapped.__name__ = loss.__name__ + "_shape_robust"
            return wrapped

        self.losses = {"plain": customloss1, "decorated": customloss2}
        self.robust_losses = {"plain": robust(customloss1), "decorated": robust(customloss2)}

    def make_model(self):
        tf = self.tf
        tf.random.set_seed(42)
        self.np.random.seed(42)
        model = tf.keras.Sequential(
            [tf.keras.Input(shape=(N_FEATURES,)), tf.keras.layers.Dense(N_CLASSES, activation="softmax")]
        )
        model.set_weights([self.kernel, self.bias])
        return model

    def optimizer(self):
        return self.tf.keras.optimizers.RMSprop(learning_rate=0.001)

    # -- probe 1: gradients of one step, eager and graph ---------------------------------
    def gradient_probes(self):
        tf, np = self.tf, self.np
        want_kernel, want_bias, clipped = exact_gradient(np, self.kernel, self.bias, self.x, self.y)
        x = tf.constant(self.x)
        y = tf.constant(self.y)
        probes = []
        for mode in ("eager", "graph"):
            for loss_name in ("plain", "decorated"):
                name = "gradient_{}_{}".format(mode, loss_name)
                if name not in self.selected:
                    continue
                start = _now()
                try:
                    with probe_window():
                        model = self.make_model()
                        loss_fn = self.losses[loss_name]

                        def step(xb, yb, model=model, loss_fn=loss_fn):
                            with tf.GradientTape() as tape:
                                loss = loss_fn(yb, model(xb))
                            return loss, tape.gradient(loss, model.trainable_variables)

                        if mode == "graph":
                            step = tf.function(step)
                        loss, grads = step(x, y)
                        loss = float(loss.numpy())
                        grads = [g.numpy() for g in grads]
                    kernel_cmp = compare(np, grads[0], want_kernel)
                    bias_cmp = compare(np, grads[1], want_bias)
                    worst = max(kernel_cmp["relative_error"], bias_cmp["relative_error"])
                    probes.append(
                        {
                            "name": name,
                            "kind": "gradient",
                            "outcome": "mismatch" if worst > GRADIENT_RTOL else "match",
                            "summary": "{} step, {} loss: relative error {:.3g} against the exact gradient".format(
                                mode, loss_name, worst
                            ),
                            "metrics": {
                                "loss": loss,
                                "kernel": kernel_cmp,
                                "bias": bias_cmp,
                                "max_relative_error": worst,
                                "max_abs_error": max(kernel_cmp["max_abs_error"], bias_cmp["max_abs_error"]),
                                "tolerance": GRADIENT_RTOL,
                                "reference_clipped_probabilities": clipped,
                                "bias_gradient": [float(v) for v in grads[1]],
                                "bias_gradient_exact": [float(v) for v in want_bias],
                            },
                            "duration_s": _now() - start,
                        }
                    )
                except Exception as exc:  # a probe's failure is data, not a crash
                    probes.append(error_probe(name, "gradient", exc, start))
        return probes

    # -- probe 2: custom training loop (the report's second figure) --------------------
    def training_loop_probe(self):
        tf, np = self.tf, self.np
        start = _now()
        name = "training_loop"
        try:
            with probe_window():
                dataset = tf.data.Dataset.from_tensor_slices((self.x, self.y, self.sample_weights)).batch(BATCH_SIZE)
                reference_loss = tf.keras.losses.SparseCategoricalCrossentropy()

                def train(loss_name):
                    model = self.make_model()
                    optimizer = self.optimizer()

                    @tf.function
                    def train_step(xb, yb, wb):
                        with tf.GradientTape() as tape:
                            predictions = model(xb)
                            if loss_name == "reference":
                                loss = reference_loss(yb, predictions, sample_weight=wb)
                            else:
                                loss = self.losses[loss_name](yb, predictions)
                        gradients = tape.gradient(loss, model.trainable_variables)
                        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
                        return loss

                    curve = []
                    for _ in range(self.epochs):
                        total, batches = 0.0, 0
                        for xb, yb, wb in dataset:
                            total += float(train_step(xb, yb, wb).numpy())
                            batches += 1
                        curve.append(total / batches)
                    return curve

                curves = {}
                errors = {}
                for config_name in ("reference",) + LOSS_CONFIGURATIONS:
                    try:
                        curves[config_name] = train(config_name)
                    except Exception as exc:  # one loss failing says nothing about the other
                        errors[config_name] = exception_info(exc)
        except Exception as exc:
            return error_probe(name, "training", exc, start)
        if errors:
            # Any failure makes the probe an error, as it always did; each configuration
            # still says its own outcome.
            first = errors[[k for k in ("reference",) + LOSS_CONFIGURATIONS if k in errors][0]]
            return {
                "name": name,
                "kind": "training",
                "outcome": "error",
                "summary": "{}: {}".format(first["type"], first["message"]),
                "metrics": {"curves": curves, "errors": errors},
                "error": first,
                "configurations": curve_configurations(np, curves, errors),
                "duration_s": _now() - start,
            }
        return curve_probe(np, name, "training", curves, start, "custom tf.function training loop")

    # -- probe 3: model.fit (the report's first figure) --------------------------------
    def fit_probe(self, name, losses, labels_note):
        tf, np = self.tf, self.np
        start = _now()
        curves = {}
        errors = {}
        configs = [("reference", None)] + [(key, losses[key]) for key in LOSS_CONFIGURATIONS]
        with probe_window():
            for config_name, loss in configs:
                try:
                    model = self.make_model()
                    if loss is None:
                        model.compile(loss="sparse_categorical_crossentropy", optimizer=self.optimizer())
                        history = model.fit(
                            self.x,
                            self.y,
                            epochs=self.epochs,
                            batch_size=BATCH_SIZE,
                            verbose=0,
                            shuffle=False,
                            class_weight={i: w for i, w in enumerate(CLASS_WEIGHTS)},
                        )
                    else:
                        model.compile(loss=loss, optimizer=self.optimizer())
                        history = model.fit(
                            self.x, self.y, epochs=self.epochs, batch_size=BATCH_SIZE, verbose=0, shuffle=False
                        )
                    curves[config_name] = [float(v) for v in history.history["loss"]]
                except Exception as exc:
                    errors[config_name] = exception_info(exc)
        if "reference" not in curves or not (set(curves) - {"reference"}):
            first = errors.get("plain") or errors.get("reference") or next(iter(errors.values()))
            probe = {
                "name": name,
                "kind": "fit",
                "outcome": "error",
                "summary": "model.fit ({}) failed: {}: {}".format(labels_note, first["type"], first["message"]),
                "metrics": {"curves": curves, "errors": errors},
                "error": first,
                "configurations": curve_configurations(np, curves, errors),
                "duration_s": _now() - start,
            }
            return probe
        probe = curve_probe(np, name, "fit", curves, start, "model.fit, " + labels_note, errors)
        if errors:
            probe["metrics"]["errors"] = errors
            probe["summary"] += "; failed: " + ", ".join(
                "{} ({})".format(k, v["type"]) for k, v in sorted(errors.items())
            )
        return probe


def exception_info(exc):
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("in user code"):
        # tf.function wraps the real error in a traceback of user frames; its last line is
        # the message that tells one failure from another.
        lines = lines[-1:]
    prefix = type(exc).__name__ + ": "
    if lines and lines[0].startswith(prefix):
        lines[0] = lines[0][len(prefix) :]
    return {
        "type": type(exc).__name__,
        "message": " ".join(lines[:3])[:500],
        "traceback_tail": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-2000:],
    }


def error_probe(name, kind, exc, start):
    info = exception_info(exc)
    return {
        "name": name,
        "kind": kind,
        "outcome": "error",
        "summary": "{}: {}".format(info["type"], info["message"]),
        "metrics": {},
        "error": info,
        "duration_s": _now() - start,
    }


def curve_deviations(np, curves):
    """Each loss's largest relative deviation from the reference curve (inf when it diverged)."""
    reference = np.asarray(curves["reference"])
    deviations = {}
    for key, curve in curves.items():
        if key == "reference":
            continue
        values = np.asarray(curve)
        with np.errstate(all="ignore"):
            rel = np.abs(values - reference) / np.maximum(np.abs(reference), 1e-12)
        deviations[key] = float(np.nanmax(rel)) if np.all(np.isfinite(values)) else float("inf")
    return deviations


def curve_configurations(np, curves, errors):
    """One outcome per loss configuration (plain, decorated): its own curve against the
    class_weight reference, or the exception it raised.  A probe that trains with both losses
    reports both, so that "mismatch" never hides which of the two was off."""
    deviations = curve_deviations(np, curves) if "reference" in curves else {}
    configurations = {}
    for key in LOSS_CONFIGURATIONS:
        label = "{} ({})".format(LOSS_NAMES[key], key)
        if key in errors:
            info = errors[key]
            configurations[key] = {
                "outcome": "error",
                "summary": "{}: {}: {}".format(label, info["type"], info["message"]),
                "metrics": {},
                "error": info,
            }
        elif key not in curves:
            continue  # never trained: the probe failed before it got there
        elif "reference" not in curves:
            info = errors.get("reference") or {"type": "NoReference", "message": "no reference curve"}
            configurations[key] = {
                "outcome": "error",
                "summary": "{}: trained, but the class_weight reference failed ({}), so there is nothing to compare with".format(
                    label, info["type"]
                ),
                "metrics": {"final_loss": curves[key][-1] if curves[key] else None},
                "error": info,
            }
        else:
            deviation = deviations[key]
            off = not deviation <= CURVE_RTOL
            configurations[key] = {
                "outcome": "mismatch" if off else "match",
                "summary": "{}: loss curve {} the class_weight reference (max relative deviation {:.3g})".format(
                    label, "off" if off else "within {:g} % of".format(CURVE_RTOL * 100), deviation
                ),
                "metrics": {
                    "max_relative_deviation": deviation,
                    "final_loss": curves[key][-1] if curves[key] else None,
                    "reference_final_loss": curves["reference"][-1] if curves["reference"] else None,
                    "tolerance": CURVE_RTOL,
                },
            }
    return configurations


def curve_probe(np, name, kind, curves, start, what, errors=None):
    deviations = curve_deviations(np, curves)
    off = sorted(k for k, v in deviations.items() if not v <= CURVE_RTOL)
    return {
        "name": name,
        "kind": kind,
        "outcome": "mismatch" if off else "match",
        "summary": "{}: {} off the class_weight reference curve".format(what, ", ".join(off) if off else "no loss"),
        "metrics": {
            "curves": curves,
            "max_relative_deviation": deviations,
            "tolerance": CURVE_RTOL,
        },
        "configurations": curve_configurations(np, curves, errors or {}),
        "duration_s": _now() - start,
    }


def verdict(probes, selected=PROBES):
    """The scenario's answer: any gradient probe off the exact gradient.  When `--probe` named
    no gradient probe, the probes named answer instead: any of them off its reference."""
    if any(name in GRADIENT_PROBES for name in selected):
        return gradient_verdict(probes)
    measured = [p for p in probes if p["outcome"] in ("match", "mismatch")]
    wrong = [p["name"] for p in measured if p["outcome"] == "mismatch"]
    if not measured:
        return {
            "outcome": "skip",
            "summary": "none of the probes asked for ({}) could run here, so the question cannot be answered".format(
                ", ".join(p["name"] for p in probes) or "none"
            ),
            "disagreements": [],
        }
    if wrong:
        text = "reproduced: off the class_weight reference curve in " + ", ".join(wrong)
    else:
        text = "not reproduced: {} match the class_weight reference curve".format(
            ", ".join(p["name"] for p in measured)
        )
    return {
        "outcome": "reproduced" if wrong else "not_reproduced",
        "summary": text,
        "disagreements": [],
        "tolerance": {"gradient_relative": GRADIENT_RTOL, "curve_relative": CURVE_RTOL},
    }


def gradient_verdict(probes):
    gradients = [p for p in probes if p["kind"] == "gradient"]
    measured = [p for p in gradients if p["outcome"] in ("match", "mismatch")]
    wrong = [p for p in measured if p["outcome"] == "mismatch"]
    if not measured:
        return {
            "outcome": "skip",
            "summary": "no gradient probe could run here, so the question cannot be answered",
            "disagreements": [],
        }
    details = [
        {
            "probe": p["name"],
            "max_abs_error": p["metrics"]["max_abs_error"],
            "max_relative_error": p["metrics"]["max_relative_error"],
        }
        for p in wrong
    ]
    if wrong:
        text = "reproduced: " + "; ".join(
            "{} is off the exact gradient (relative error {:.3g}, max abs {:.3g})".format(
                d["probe"], d["max_relative_error"], d["max_abs_error"]
            )
            for d in details
        )
    else:
        text = "not reproduced: all {} gradient configurations match the exact gradient".format(len(measured))
        if len(measured) < len(GRADIENT_PROBES):  # --probe asked for some only
            text = "not reproduced: {} match the exact gradient".format(", ".join(p["name"] for p in measured))
    others = [p["name"] for p in probes if p["kind"] != "gradient" and p["outcome"] == "mismatch"]
    if others:
        text += "; training curves off the reference in: " + ", ".join(others)
    return {
        "outcome": "reproduced" if wrong else "not_reproduced",
        "summary": text,
        "disagreements": details,
        "tolerance": {"gradient_relative": GRADIENT_RTOL, "curve_relative": CURVE_RTOL},
    }


def finite(value):
    """JSON has no NaN or infinity: a diverged loss curve is written as null."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(path, document):
    text = json.dumps(finite(document), indent=2, sort_keys=True, allow_nan=False)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="result.json", help="where to write the JSON result")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the training probes (default 20)")
    parser.add_argument("--quiet", action="store_true", help="print only the verdict")
    parser.add_argument(
        "--exit-zero",
        action="store_true",
        help="exit 0 for either verdict (for tox, where 'reproduced' is an answer, not a failure)",
    )
    parser.add_argument(
        "--probe",
        action="append",
        metavar="NAME",
        help="run only this probe (repeatable; default: all of {})".format(", ".join(PROBES)),
    )
    args = parser.parse_args(argv)

    started = _now()
    document = {
        "schema_version": SCHEMA_VERSION,
        "scenario": {
            "name": SCENARIO_NAME,
            "sha256": file_sha256(os.path.abspath(__file__)),
            "description": __doc__.strip().splitlines()[0],
            "parameters": {"epochs": args.epochs, "samples": N_SAMPLES, "batch_size": BATCH_SIZE},
        },
        "environment": {"python": platform.python_version()},
        "probes": [],
        "verdict": None,
        "timings": {},
    }
    selected = PROBES
    if args.probe:
        unknown = [name for name in args.probe if name not in PROBES]
        if unknown:
            # Asked for something this scenario cannot run: no answer here, and no need for TF to say so.
            summary = "no probe named {}; the probes are: {}".format(", ".join(unknown), ", ".join(PROBES))
            document["verdict"] = {"outcome": "skip", "summary": summary, "disagreements": []}
            document["timings"] = {"total_s": _now() - started}
            write_json(args.output, document)
            print(summary, file=sys.stderr)
            return EXIT_SKIP
        selected = tuple(name for name in PROBES if name in args.probe)  # in the order they run
        document["scenario"]["parameters"]["probes"] = list(selected)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import numpy as np
        import tensorflow as tf
    except Exception as exc:  # an environment without a working TF cannot answer: skip
        info = exception_info(exc)
        document["verdict"] = {
            "outcome": "skip",
            "summary": "TensorFlow cannot be imported here: {}: {}".format(info["type"], info["message"]),
            "disagreements": [],
        }
        document["timings"] = {"import_s": _now() - started, "total_s": _now() - started}
        write_json(args.output, document)
        print(document["verdict"]["summary"])
        return EXIT_SKIP
    document["timings"]["import_s"] = _now() - started
    document["environment"] = environment(tf, np)

    scenario = Scenario(tf, np, args.epochs, selected)
    probes = document["probes"]
    steps = [
        (GRADIENT_PROBES, scenario.gradient_probes),
        (("training_loop",), scenario.training_loop_probe),
        (
            ("fit_report_labels",),
            lambda: scenario.fit_probe("fit_report_labels", scenario.losses, "labels exactly as in the report"),
        ),
        (
            ("fit_shape_robust",),
            lambda: scenario.fit_probe("fit_shape_robust", scenario.robust_losses, "labels flattened before one_hot"),
        ),
    ]
    for names, step in steps:
        if not any(name in selected for name in names):
            continue
        produced = step()
        for probe in produced if isinstance(produced, list) else [produced]:
            probes.append(probe)
            if not args.quiet:
                print("probe {:<26} {:<9} {}".format(probe["name"], probe["outcome"], probe["summary"]))
                for key, config in probe.get("configurations", {}).items():  # plain, then decorated
                    print(
                        "probe {:<26} {:<9} {}".format(
                            "  " + probe["name"] + ":" + key, config["outcome"], config["summary"]
                        )
                    )
                sys.stdout.flush()
    document["verdict"] = verdict(probes, selected)
    document["timings"]["total_s"] = _now() - started
    write_json(args.output, document)
    print("verdict: " + document["verdict"]["summary"])
    code = {"reproduced": EXIT_BAD, "not_reproduced": EXIT_GOOD}.get(document["verdict"]["outcome"], EXIT_SKIP)
    return EXIT_GOOD if args.exit_zero and code == EXIT_BAD else code


if __name__ == "__main__":
    sys.exit(main())
