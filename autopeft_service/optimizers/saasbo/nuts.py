"""The SAAS model's hyperparameters sampled by NUTS (NumPyro, JAX), loaded into BoTorch.

Why by hand: BoTorch's ``fit_fully_bayesian_model_nuts`` traces the model with the
training data as constants, so XLA compiles a new program (10-25 s on this machine) at
every call, whatever the settings. Here the same SAAS model (same priors, same Matern-5/2
kernel) is a NumPyro model whose data are arguments of one jitted program, with the rows
padded to a multiple of ``PAD_ROWS`` by masked rows that only add a constant to the log
density: a study compiles once per 16 trials per process (about 6 s; set
``JAX_COMPILATION_CACHE_DIR`` to keep the compiled programs across restarts, which saves
about half of it). The samples are loaded into ``SaasFullyBayesianSingleTaskGP`` as
BoTorch does.

The multi-task form (warm start, ``saasbo/transfer.py``) is BoTorch's
``MultitaskSaasPyroModel`` in the same way: the data kernel above times a task covariance,
a Matern-5/2 kernel over sampled latent task features (so a task correlation lies in
(0, 1]), and one mean per task; its samples load into ``SaasFullyBayesianMultiTaskGP``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from autopeft_service.optimizers.saasbo.settings import PAD_ROWS, SaasboSettings

_RUNNERS: dict[tuple[int, ...], Callable[..., Any]] = {}
_RUNNERS_LOCK = threading.Lock()


def _saas_numpyro_model(squared_differences: Any, Y: Any, mask: Any) -> None:
    """BoTorch's ``SaasPyroModel`` (same priors, same kernel) with masked padding rows.

    Args:
        squared_differences: ``n x n x D``, ``(x_i - x_j)^2`` per input dimension. The
            data are fixed during a NUTS run, so the squared scaled distances are one
            matrix-vector product with the inverse squared lengthscales; BoTorch's
            ``matern52_kernel`` rescales and subtracts the inputs at every leapfrog step,
            which made the kernel and its gradient 2.4 times as slow (and NUTS about a
            quarter slower) at 100 trials in 27 dimensions. Same values to float precision.
        Y: ``n`` standardised targets (0 on padding rows).
        mask: ``n``, 1 for data rows and 0 for padding rows.

    Padded rows (mask 0) get unit variance, no covariance with anything and target 0, so
    they add the constant -log(2 pi)/2 each to the log density and nothing else.
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from botorch.models.fully_bayesian import MIN_INFERRED_NOISE_LEVEL

    outputscale = numpyro.sample("outputscale", dist.Gamma(2.0, 0.15))
    mean = numpyro.sample("mean", dist.Normal(0.0, 1.0))
    noise = MIN_INFERRED_NOISE_LEVEL + numpyro.sample("noise", dist.Gamma(0.9, 10.0))
    tausq = numpyro.sample("kernel_tausq", dist.HalfCauchy(0.1))
    inv_length_sq = numpyro.sample("_kernel_inv_length_sq",
                                   dist.HalfCauchy(jnp.ones(squared_differences.shape[-1])))
    # Matern-5/2 as botorch.models.fully_bayesian.matern52_kernel, with
    # 1 / lengthscale^2 = tausq * inv_length_sq.
    squared = squared_differences @ (tausq * inv_length_sq)
    root5 = math.sqrt(5.0) * jnp.sqrt(jnp.maximum(squared, 1e-30))
    K = outputscale * (1.0 + root5 + 5.0 / 3.0 * squared) * jnp.exp(-root5)
    K = K * (mask[:, None] * mask[None, :]) + jnp.diag(noise * mask + (1.0 - mask))
    numpyro.sample("Y", dist.MultivariateNormal(mean * mask, covariance_matrix=K),
                   obs=Y * mask)


def _multitask_saas_numpyro_model(squared_differences: Any, Y: Any, mask: Any,
                                  tasks: Any, num_tasks: int) -> None:
    """BoTorch's ``MultitaskSaasPyroModel`` (same priors, same kernels) with masked padding
    rows: ``_saas_numpyro_model``'s data kernel times the task covariance, a mean per task.

    Args:
        squared_differences, Y, mask: as ``_saas_numpyro_model``.
        tasks: ``n`` task indices (0 on padding rows).
        num_tasks: the number of tasks (full-rank task features, BoTorch's default).
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from botorch.models.fully_bayesian import MIN_INFERRED_NOISE_LEVEL

    outputscale = numpyro.sample("outputscale", dist.Gamma(2.0, 0.15))
    mean = numpyro.sample("mean", dist.Normal(0.0, 1.0).expand((num_tasks,)))
    noise = MIN_INFERRED_NOISE_LEVEL + numpyro.sample("noise", dist.Gamma(0.9, 10.0))
    tausq = numpyro.sample("kernel_tausq", dist.HalfCauchy(0.1))
    inv_length_sq = numpyro.sample("_kernel_inv_length_sq",
                                   dist.HalfCauchy(jnp.ones(squared_differences.shape[-1])))
    latent = numpyro.sample("latent_features",
                            dist.Normal(0.0, 1.0).expand((num_tasks, num_tasks)))
    task_lengthscale = numpyro.sample("task_lengthscale",
                                      dist.Gamma(6.0, 3.0).expand((num_tasks,)))
    squared = squared_differences @ (tausq * inv_length_sq)
    root5 = math.sqrt(5.0) * jnp.sqrt(jnp.maximum(squared, 1e-30))
    K = outputscale * (1.0 + root5 + 5.0 / 3.0 * squared) * jnp.exp(-root5)
    task_covar = task_covariance(latent, task_lengthscale)
    K = K * task_covar[tasks][:, tasks]
    K = K * (mask[:, None] * mask[None, :]) + jnp.diag(noise * mask + (1.0 - mask))
    numpyro.sample("Y", dist.MultivariateNormal(mean[tasks] * mask, covariance_matrix=K),
                   obs=Y * mask)


def task_covariance(latent: Any, lengthscale: Any) -> Any:
    """BoTorch's task covariance (``matern52_kernel`` over the latent task features):
    ``T x T``, ones on the diagonal, each entry the correlation of two tasks. Works on
    JAX and NumPy arrays alike; leading batch dimensions are kept."""
    import jax.numpy as jnp

    scaled = latent / lengthscale[..., None, :]
    diff = scaled[..., :, None, :] - scaled[..., None, :, :]
    distance = jnp.sqrt(jnp.maximum((diff ** 2).sum(-1), 1e-30))
    root5 = math.sqrt(5.0) * distance
    return (1.0 + root5 + 5.0 / 3.0 * distance ** 2) * jnp.exp(-root5)


def _nuts_runner(dimension: int, settings: SaasboSettings,
                 num_tasks: int = 1) -> Callable[..., Any]:
    """One jitted NUTS program per (dimension, NUTS settings, task count); XLA specialises
    it per padded row count on first use and keeps it for later calls of the same shape.
    One task is the SAAS model; more, the multi-task SAAS model, whose program takes the
    rows' task indices as a fourth argument."""
    key = (dimension, settings.warmup_steps, settings.num_samples, settings.thinning,
           settings.max_tree_depth, num_tasks)
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(key)
        if runner is not None:
            return runner
        import jax
        from jax import lax, random
        from numpyro.infer.hmc import hmc
        from numpyro.infer.util import constrain_fn, potential_energy

        shapes: dict[str, tuple[int, ...]] = {
            "outputscale": (), "mean": (), "noise": (), "kernel_tausq": (),
            "_kernel_inv_length_sq": (dimension,)}
        if num_tasks == 1:
            model: Callable[..., None] = _saas_numpyro_model
        else:
            model = partial(_multitask_saas_numpyro_model, num_tasks=num_tasks)
            shapes.update(mean=(num_tasks,), latent_features=(num_tasks, num_tasks),
                          task_lengthscale=(num_tasks,))

        def potential_gen(*data: Any) -> Callable[..., Any]:
            return partial(potential_energy, model, data, {})

        warmup, kept = settings.warmup_steps, settings.num_samples

        def run(rng_key: Any, *data: Any) -> Any:
            init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")
            keys = random.split(rng_key, len(shapes) + 1)
            # NumPyro's default initialisation: uniform in (-2, 2) in unconstrained space.
            z0 = {name: random.uniform(k, shape, minval=-2.0, maxval=2.0)
                  for k, (name, shape) in zip(keys[:-1], sorted(shapes.items()), strict=True)}
            state = init_kernel(z0, warmup, dense_mass=True,
                                max_tree_depth=settings.max_tree_depth,
                                model_args=data, rng_key=keys[-1])

            def step(carry: Any, _: Any) -> Any:
                carry = sample_kernel(carry, model_args=data)
                return carry, (carry.z, carry.num_steps, carry.diverging)

            _, (zs, steps, diverging) = lax.scan(step, state, None, length=warmup + kept)
            zs = jax.tree.map(lambda a: a[warmup::settings.thinning], zs)
            constrained = jax.vmap(lambda z: constrain_fn(model, data, {}, z))(zs)
            return constrained, steps.sum(), diverging[warmup:].sum()

        runner = _RUNNERS[key] = jax.jit(run)
        return runner


@dataclass(frozen=True)
class NutsStats:
    """What one NUTS run cost: leapfrog steps, divergent transitions after warmup."""

    leapfrog_steps: int
    divergences: int


def fit_saas_nuts(model: Any, settings: SaasboSettings, seed: int) -> NutsStats:
    """Sample the SAAS hyperparameters of ``model`` by NUTS and load them (as BoTorch does).

    Args:
        model: an unfitted ``SaasFullyBayesianSingleTaskGP``; its (transformed) training
            data are read from ``model.pyro_model``.
        settings: NUTS settings.
        seed: JAX PRNG seed.
    """
    samples, stats = nuts_samples(model.pyro_model.train_X, model.pyro_model.train_Y,
                                  settings, seed)
    load_samples(model, samples)
    return stats


def nuts_samples(train_X: Tensor, train_Y: Tensor, settings: SaasboSettings, seed: int,
                 tasks: Tensor | None = None, num_tasks: int = 1
                 ) -> tuple[dict[str, Tensor], NutsStats]:
    """NUTS samples of the SAAS hyperparameters for (unit-cube X, standardised Y), as the
    ``load_mcmc_samples`` mapping of ``SaasFullyBayesianSingleTaskGP``; with ``tasks`` (the
    rows' task indices, ``0 .. num_tasks - 1``) and ``num_tasks`` > 1, of the multi-task
    model, as that of ``SaasFullyBayesianMultiTaskGP`` (plus ``latent_features``,
    ``task_lengthscale`` and a mean per task)."""
    import numpy as np
    from botorch.models.fully_bayesian import MIN_INFERRED_NOISE_LEVEL
    from jax import random

    x = train_X.detach().cpu().numpy()
    y = train_Y.detach().cpu().numpy().reshape(-1)
    n, d = x.shape
    rows = PAD_ROWS * math.ceil(n / PAD_ROWS)
    X = np.zeros((rows, d), np.float32)
    X[:n] = x
    Y = np.zeros(rows, np.float32)
    Y[:n] = y
    mask = np.zeros(rows, np.float32)
    mask[:n] = 1.0
    squared_differences = np.square(X[:, None, :] - X[None, :, :])
    data: tuple[Any, ...] = (squared_differences, Y, mask)
    if num_tasks > 1:
        if tasks is None:
            raise ValueError("nuts_samples: num_tasks > 1 needs the rows' tasks")
        task_rows = np.zeros(rows, np.int32)
        task_rows[:n] = tasks.detach().cpu().numpy().astype(np.int32)
        data += (task_rows,)
    samples, steps, divergences = _nuts_runner(d, settings, num_tasks)(random.PRNGKey(seed),
                                                                       *data)
    def tensor(name: str) -> Tensor:
        return torch.tensor(np.array(samples[name]), dtype=train_X.dtype, device=train_X.device)

    inv_length_sq = tensor("kernel_tausq").unsqueeze(-1) * tensor("_kernel_inv_length_sq")
    out = {"lengthscale": inv_length_sq.rsqrt(), "outputscale": tensor("outputscale"),
           "mean": tensor("mean"), "noise": tensor("noise") + MIN_INFERRED_NOISE_LEVEL}
    if num_tasks > 1:
        out.update(latent_features=tensor("latent_features"),
                   task_lengthscale=tensor("task_lengthscale"))
    return out, NutsStats(leapfrog_steps=int(steps), divergences=int(divergences))


def load_samples(model: Any, samples: dict[str, Tensor]) -> None:
    """Load hyperparameter samples into a ``SaasFullyBayesianSingleTaskGP`` (any data)."""
    model.train()
    model.load_mcmc_samples(samples)
    model.eval()
