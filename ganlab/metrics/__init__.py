"""Quality metrics: mode coverage (toys), classifier-space and Inception FID/KID (images),
robust accuracy (classifiers). Families compute them; the loop and `report` rank runs by them."""

# The metric a run is ranked by (best checkpoint, `report`), in order of preference: the first
# one a run reports is its primary metric. "min": lower is better.
PRIMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("fid", "min"),  # Inception FID (GANs, when the Inception weights are present)
    ("classifier_fid", "min"),  # FID in the reference classifier's feature space (digits)
    ("heldout_neg_elbo", "min"),  # VAEs
    ("heldout_recon", "min"),  # autoencoders
    ("modes_covered", "max"),  # GANs on the 2-D toys
    ("accuracy", "max"),  # classifiers (held-out, clean)
)


def primary_metric(metrics: dict) -> tuple[str, str] | None:
    """(name, "min"|"max") of the first PRIMARY_METRICS entry present in metrics."""
    for name, mode in PRIMARY_METRICS:
        if isinstance(metrics.get(name), (int, float)):
            return name, mode
    return None
