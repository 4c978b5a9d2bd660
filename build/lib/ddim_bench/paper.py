"""Numbers reported in the DDIM paper (Song, Meng & Ermon, ICLR 2021), for side-by-side tables."""

TABLE1_STEPS = (10, 20, 50, 100, 1000)

# Table 1, FID (lower is better). Rows: eta values and "hat" (the sigma-hat row); columns: TABLE1_STEPS.
TABLE1 = {
    "cifar10": {  # CIFAR-10 32x32, quadratic skip, 50k samples vs the training set
        0.0: (13.36, 6.84, 4.67, 4.16, 4.04),
        0.2: (14.04, 7.11, 4.77, 4.25, 4.09),
        0.5: (16.66, 8.35, 5.25, 4.46, 4.29),
        1.0: (41.07, 18.36, 8.01, 5.78, 4.73),
        "hat": (367.43, 133.37, 32.72, 9.99, 3.17),
    },
    "celeba": {  # CelebA 64x64, uniform skip
        0.0: (17.33, 13.73, 9.17, 6.53, 3.51),
        0.2: (17.66, 14.11, 9.51, 6.79, 3.64),
        0.5: (19.86, 16.06, 11.01, 8.09, 4.28),
        1.0: (33.12, 26.03, 18.48, 13.93, 5.98),
        "hat": (299.71, 183.83, 71.71, 45.20, 3.26),
    },
}
TABLE1_SKIP = {"cifar10": "quad", "celeba": "uniform"}

# Table 2: CIFAR-10 test-set reconstruction error (per-dimension MSE on [0, 1]), encode + decode with S steps.
TABLE2 = {10: 0.014, 20: 0.0065, 50: 0.0023, 100: 0.0009, 200: 0.0004, 500: 0.0001, 1000: 0.0001}


def table1_value(dataset: str | None, row, steps: int):
    """The paper's FID for (row, S), or None where the paper has no such cell."""
    table = TABLE1.get(dataset or "")
    if table is None or steps not in TABLE1_STEPS:
        return None
    values = table.get(row if row == "hat" else float(row))
    return None if values is None else values[TABLE1_STEPS.index(steps)]
