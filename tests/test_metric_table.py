"""One metric table: the scorer's settings, the record's columns, the intervals' keys and the aggregation all read
``ddim_bench.metric_table``; nothing keeps a default or a name of its own."""
from omegaconf import OmegaConf

from ddim_bench import metric_table as T
from ddim_bench import schema
from ddim_bench.reporting import aggregate
from ddim_bench.results import record
from ddim_bench.scoring import metrics as M
from ddim_bench.scoring import uncertainty as U


def test_the_scorer_reads_the_schemas_defaults_and_every_setting_can_be_set():
    cfg = M.typed({"extractor": "digits"})
    assert cfg.batch_size == schema.Metrics().batch_size == 256 and cfg.rng_seed == 2020
    assert cfg.kid_subset_size == 1000 and cfg.kid_subsets == 100 and cfg.isc_splits == 10 and cfg.prc is True
    own = M.typed(OmegaConf.create({"extractor": "digits", "rng_seed": 7, "batch_size": 32, "kid_subsets": 5}))
    assert (own.rng_seed, own.batch_size, own.kid_subsets) == (7, 32, 5)


def test_record_columns_and_summary_follow_the_table():
    cols = record.columns()
    for m in T.METRICS:
        assert [m.key, m.lo, m.hi, m.se] == cols[cols.index(m.key):cols.index(m.key) + 4]
    rec = {"key": "k", "fid": 3.0, "fid_lo": 2.5, "fid_hi": 3.5, "fid_se": 0.25, "is_mean": 1.5, "is_lo": None,
           "sec_per_image": 0.1}
    assert record.summary(rec) == {"fid": 3.0, "fid_lo": 2.5, "fid_hi": 3.5, "fid_se": 0.25, "is_mean": 1.5,
                                   "sec_per_image": 0.1}
    assert record.row(rec)[cols.index("sampler")] == "ddim" and record.row(rec)[cols.index("fid_se")] == 0.25


def test_intervals_aggregation_and_claims_share_the_tables_names():
    assert U.METRIC_KEYS == {"fid": ("fid",), "kid": ("kid_mean",), "isc": ("is_mean",),
                             "prc": ("precision", "recall")}
    assert set(aggregate.METRICS) >= set(T.BY_KEY) and aggregate.INTERVAL["is_mean"] == "is"
    assert set(schema.CLAIM_METRICS) == set(U.FAMILY) and "fid_inf" not in schema.CLAIM_METRICS
    assert U.clip_to_support("fid_inf", -1.0, 2.0) == (0.0, 2.0)  # FD∞ has FID's support
    assert U.clip_to_support("precision", -0.1, 1.2) == (0.0, 1.0)
