"""The GPU benchmark's schedule projection (the measurement itself needs a GPU machine)."""

import pytest

from bench.bench_gpu import project_schedule


def test_projection_counts_training_and_per_epoch_evaluation():
    # 6,400 training images at 3,200/s = 2 s; paper protocol evaluates 20% of the 5,914
    # train-pool images (validation) + 1,995 test images = 3,177.8 images at 3,177.8/s = 1 s.
    projection = project_schedule(train_images_per_s=3200, evaluate_images_per_s=3177.8)
    assert projection.paper_protocol_h == pytest.approx(200 * 3 / 3600)
    assert projection.evaluation_share == pytest.approx(1 / 3)
    # a patient fold evaluates 30% of 7,909 (test) + 20% of the remaining 70% (validation)
    fold_eval_s = (7909 * 0.3 + 7909 * 0.7 * 0.2) / 3177.8
    expected = 200 * 3 + 5 * 200 * (2 + fold_eval_s)
    assert projection.default_run_h == pytest.approx(expected / 3600)


def test_projection_is_per_paper_images_whatever_the_batch_size():
    slow, fast = project_schedule(1000, 5000), project_schedule(2000, 5000)
    assert fast.paper_protocol_h < slow.paper_protocol_h
    assert project_schedule(1000, 5000, epochs=100).paper_protocol_h == pytest.approx(
        slow.paper_protocol_h / 2
    )
