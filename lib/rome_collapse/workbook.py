"""The notebooks' common opening: one call that loads the model, its key statistics C in each setting and its
context templates, with the run sizes of a profile.

``setup(model, profile, settings)`` styles the plots and returns a ``Setup``: the profile, the bundle, one C per
setting (the identity in "paper"; the C is the setting, ``stats.SecondMoment.setting``) and the context templates
(shared by the settings: they do not depend on C). Everything heavy is cached.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from . import keys, models, plots, stats
from .models import Bundle
from .profiles import Profile, get_profile
from .stats import SecondMoment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    """What a notebook opens with. ``covariances`` is keyed by setting, in the order asked."""
    profile: Profile
    bundle: Bundle
    covariances: dict[str, SecondMoment]
    templates: list[str]

    @property
    def covariance(self) -> SecondMoment:
        """The first setting's C."""
        return next(iter(self.covariances.values()))

    def describe(self) -> str:
        """One line: model, edit layer, v* steps, BOS, templates and each setting's C."""
        b = self.bundle
        return (f"{b.name}: edit layer {b.hparams.layer}, v* {b.hparams.v_num_grad_steps} steps, BOS {b.add_bos}, "
                f"{len(self.templates)} context templates; "
                + "; ".join(f"setting {s}: {c.describe()}" for s, c in self.covariances.items()))


def setup(model: str, profile: str, settings: str | list[str] = stats.DEFAULT_SETTING, device=None,
          workers: int = 1) -> Setup:
    """Load ``model`` once (with the profile's v* steps) and its C in each of ``settings`` ("paper", "original", or a
    list of them), over the profile's ``stats_samples`` texts (cached; nothing is computed in "paper"; on
    ``workers`` threads), and the context templates of the profile's ``template_seed`` (cached)."""
    prof = get_profile(profile)
    settings = [settings] if isinstance(settings, str) else list(settings)
    if not settings:
        raise ValueError("setup needs at least one setting")
    plots.setup()
    bundle = prof.sized(models.load_model(model, device=device))
    covariances = {s: stats.covariance(bundle, s, n_samples=prof.stats_samples, workers=workers) for s in settings}
    templates = keys.context_templates(bundle, seed=prof.template_seed)
    log.info("set up %s in settings %s (%s profile)", model, ", ".join(settings), prof.name)
    return Setup(prof, bundle, covariances, templates)
