"""qLogNEHVI of single candidates, fast: the acquisition values the local search scores.

Written by hand because BoTorch recomputes the baseline's kernel for every candidate
(details in ``SingleCandidateNehvi``); the values are BoTorch's own (tested to 1e-6).
BoTorch internals are read through ``botorch_private`` only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from autopeft_service.optimizers.saasbo import botorch_private


class SingleCandidateNehvi:
    """qLogNEHVI of one candidate at a time (q = 1), computed without BoTorch's joint posterior.

    BoTorch evaluates qLogNEHVI at X by building the joint posterior of (X_baseline, X): for
    every candidate it recomputes the kernel between all baseline points and the training
    data (its own TODO in ``_compute_posterior_samples_and_concat_pending``), about 9 ms per
    candidate at 100 trials and 60 baseline points. Here the baseline part is computed once:
    per MCMC sample, ``A = K_TT^-1 K_TB``, and a candidate needs only its kernel rows to the
    training and baseline points. The joint sample at the candidate is then formed exactly
    as BoTorch's ``sample_cached_cholesky`` does (the cached root of the baseline posterior,
    the same base samples), and the hypervolume part is BoTorch's own
    ``_compute_log_qehvi`` on the acquisition object, so the values are those of
    ``acquisition(X)`` (tested to 1e-6).

    Only for the exact-share path, where the model is the single SAAS GP.

    Args:
        acquisition: a qLogNEHVI over a ``SaasFullyBayesianSingleTaskGP`` with
            ``cache_root=True``, pending points already set.
    """

    def __init__(self, acquisition: Any) -> None:
        self.acquisition = acquisition
        gp = acquisition.model
        with torch.no_grad():
            # One call of BoTorch's own forward sets its sampler up for q = 1: the base
            # samples of the baseline followed by those of the new point.
            acquisition(acquisition.X_baseline[:1].unsqueeze(-2))
            base = acquisition.sampler.base_samples
            self.base_samples = base.reshape(base.shape[0], base.shape[-1])  # mc x (nB + 1)
            self.train_X = gp.train_inputs[0]  # n x D
            self.lengthscale = gp.covar_module.base_kernel.lengthscale  # M x 1 x D
            self.outputscale = gp.covar_module.outputscale  # M
            transform = gp.outcome_transform
            self.y_mean = transform.means.squeeze()
            self.y_std = transform.stdvs.squeeze()
            constant = gp.mean_module.constant.reshape(-1)  # M
            noise = gp.likelihood.noise.reshape(-1)  # M
            K = self._kernel(self.train_X, self.train_X)
            K = K + noise.view(-1, 1, 1) * torch.eye(len(self.train_X), dtype=K.dtype)
            self.train_L = torch.linalg.cholesky(K)  # M x n x n
            residual = (gp.train_targets.view(1, -1, 1) - constant.view(-1, 1, 1))
            self.alpha = torch.cholesky_solve(residual, self.train_L)  # M x n x 1
            self.constant = constant
            self.baseline_X = acquisition.X_baseline  # nB x D
            self.baseline_L = botorch_private.baseline_cholesky(acquisition)  # M x nB x nB
            K_TB = self._kernel(self.train_X, self.baseline_X)  # M x n x nB
            self.A = torch.cholesky_solve(K_TB, self.train_L)  # M x n x nB

    def _kernel(self, X1: Tensor, X2: Tensor) -> Tensor:
        """Matern-5/2 with each MCMC sample's lengthscales and outputscale: M x n1 x n2."""
        a = X1.unsqueeze(0) / self.lengthscale
        b = X2.unsqueeze(0) / self.lengthscale
        distance = torch.cdist(a, b).clamp_min(1e-15)
        root5 = math.sqrt(5.0) * distance
        matern = (1.0 + root5 + root5.square() / 3.0) * torch.exp(-root5)
        covariance: Tensor = self.outputscale.view(-1, 1, 1) * matern
        return covariance

    def __call__(self, X: Tensor) -> Tensor:
        """Log acquisition values of ``b x D`` candidates (``b``)."""
        from botorch.utils.safe_math import logmeanexp

        k_xT = self._kernel(X, self.train_X)  # M x b x n
        k_xB = self._kernel(X, self.baseline_X)  # M x b x nB
        variance_scale = self.y_std.square()
        mean = self.y_std * (self.constant.view(-1, 1) + (k_xT @ self.alpha).squeeze(-1)) \
            + self.y_mean  # M x b
        cross = variance_scale * (k_xB - k_xT @ self.A)  # M x b x nB
        v = torch.linalg.solve_triangular(self.train_L, k_xT.transpose(-1, -2), upper=False)
        var = variance_scale * (self.outputscale.view(-1, 1) - v.square().sum(-2))  # M x b
        left = torch.linalg.solve_triangular(self.baseline_L, cross.transpose(-1, -2),
                                             upper=False).transpose(-1, -2)  # M x b x nB
        corner = (var - left.square().sum(-1)).clamp_min(1e-12).sqrt()  # M x b
        rows = torch.cat([left, corner.unsqueeze(-1)], dim=-1)  # M x b x (nB + 1)
        samples = torch.einsum("mbj,sj->sbm", rows, self.base_samples) + mean.T.unsqueeze(0)
        samples = samples.unsqueeze(-1).unsqueeze(-1)  # mc x b x M x 1 x 1
        return logmeanexp(self._log_nehvi(samples, X.unsqueeze(-2)), dim=-1)

    def _log_nehvi(self, samples: Tensor, X: Tensor) -> Tensor:
        """``b x M`` log NEHVI of single points from their samples (``mc x b x M x 1 x 1``).

        With one point, BoTorch's inclusion-exclusion over subsets of the q points has a
        single term, and its safe-logsumexp bookkeeping (over a subset dimension of size 1,
        then over even/odd terms of which one is empty) costs five times the fused C++
        kernel that computes the log cell areas. So the areas come from that same kernel
        and only the two reductions that remain for q = 1 are done here: a logsumexp over
        the cells and a logmeanexp over the MC samples. Without the kernel (no compiler),
        BoTorch's general path is used.
        """
        from botorch.utils.safe_math import logmeanexp

        acquisition = self.acquisition
        if botorch_private.fused_kernel() is None or not acquisition.fat \
                or acquisition.constraints is not None:
            values: Tensor = botorch_private.compute_log_qehvi(acquisition, samples, X)
            return values
        obj = acquisition.objective(samples, X=X)  # mc x b x M x 1 x m
        mc, b = obj.shape[0], obj.shape[1]
        lower = acquisition.cell_lower_bounds  # mc x M x cells x m
        upper = acquisition.cell_upper_bounds
        lower = lower.unsqueeze(1).expand(mc, b, *lower.shape[1:])
        upper = upper.unsqueeze(1).expand(mc, b, *upper.shape[1:])
        log_areas = botorch_private.fused_log_areas().apply(obj.unsqueeze(-3), lower, upper,
                                               acquisition.tau_relu, acquisition.tau_max)
        # log_areas: mc x b x M x cells x 1
        return logmeanexp(torch.logsumexp(log_areas.squeeze(-1), dim=-1), dim=0)
