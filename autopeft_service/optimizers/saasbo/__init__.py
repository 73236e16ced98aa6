"""The default optimiser: SAAS-BO (a fully Bayesian SAAS GP and qLogNEHVI) over any space.

One module per part: ``settings`` (settings and limits), ``encoding`` (points <-> model
inputs, validity and neighbours from the space), ``nuts`` (the SAAS hyperparameters by
NUTS), ``acquisition`` (fast single-candidate qLogNEHVI), ``optimizer`` (the proposer's
``suggest``), ``botorch_private`` (every access to BoTorch internals, version-checked).
"""

from autopeft_service.optimizers.saasbo.acquisition import SingleCandidateNehvi
from autopeft_service.optimizers.saasbo.encoding import Encoding
from autopeft_service.optimizers.saasbo.info import ProposalInfo
from autopeft_service.optimizers.saasbo.nuts import NutsStats, _saas_numpyro_model, fit_saas_nuts
from autopeft_service.optimizers.saasbo.optimizer import SaasboOptimizer
from autopeft_service.optimizers.saasbo.settings import MAX_DIMENSION, SaasboSettings

__all__ = ["MAX_DIMENSION", "Encoding", "NutsStats", "ProposalInfo", "SaasboOptimizer",
           "SaasboSettings", "SingleCandidateNehvi", "_saas_numpyro_model", "fit_saas_nuts"]
