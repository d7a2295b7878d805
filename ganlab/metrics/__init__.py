"""Quality metrics: mode coverage (toys), classifier-space and Inception FID/KID, precision/
recall/density/coverage and Inception Score (images), translation FID (CycleGAN), robust
accuracy (classifiers). Sample metrics (metrics/samples.py) measure any family that
draws samples; a family's own evaluate() reports what only it can (held-out ELBO, robust
accuracy, cycle error). The loop and `report` rank runs by them."""

# The metric a run is ranked by (best checkpoint, `report`), in order of preference: the first
# one a run reports is its primary metric. "min": lower is better.
PRIMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("heldout_neg_elbo", "min"),  # VAEs (their samples' FIDs are reported beside it)
    ("heldout_recon", "min"),  # autoencoders
    ("fid_translation", "min"),  # translation models: mean Inception FID of both directions
    ("l1", "min"),  # paired translation (pix2pix): |output - target| on held-out pairs
    ("fid", "min"),  # Inception FID (generators, when the Inception weights are present)
    ("classifier_fid", "min"),  # FID in the reference classifier's feature space (digits)
    ("modes_covered", "max"),  # GANs on the 2-D toys
    ("iou_coverage", "max"),  # voxel GANs: real shapes' mean IoU with their nearest sample
    ("accuracy", "max"),  # classifiers (held-out, clean)
    ("psnr", "max"),  # super-resolution (srgan, srresnet), which names it in RANKED_BY
    ("frame_l1_10", "min"),  # learned games (gamegan): held-out L1 over 10 predicted frames
    ("heldout_nll_z", "min"),  # World Models' M: held-out next-z NLL
    ("real_return", "max"),  # World Models' C: mean return over fixed-seed real episodes
)
# a string entry of a run's metrics naming the PRIMARY_METRICS entry it is ranked by, where it
# reports several (super-resolution reports l1 too but is ranked by PSNR, as the paper)
RANKED_BY = "ranked_by"


def primary_metric(metrics: dict) -> tuple[str, str] | None:
    """(name, "min"|"max") of the entry metrics[RANKED_BY] names, else of the first
    PRIMARY_METRICS entry present in metrics."""
    named = metrics.get(RANKED_BY)
    modes = dict(PRIMARY_METRICS)
    if (isinstance(named, str) and named in modes
            and isinstance(metrics.get(named), (int, float))):
        return named, modes[named]
    for name, mode in PRIMARY_METRICS:
        if isinstance(metrics.get(name), (int, float)):
            return name, mode
    return None
