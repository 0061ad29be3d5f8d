"""The notebook's records (uninext_paddle/records.py): its counters, and history.json."""
from __future__ import annotations

import json

from uninext_paddle.records import Records


def test_records_follow_the_notebooks_counters(tmp_path):
    records = Records()
    for epoch in range(2):
        records.add_train_loss(2.0 - epoch)
        records.add_train_loss(1.5 - epoch)
        records.add_train_acc(0.5 + epoch / 10)
        records.add_val(1.0, 0.6)
    assert records.loss_record == {'train': {'loss': [2.0, 1.5, 1.0, 0.5], 'iter': [0, 1, 2, 3]},
                                   'val': {'loss': [1.0, 1.0], 'iter': [2, 4]}}
    assert records.acc_record == {'train': {'acc': [0.5, 0.6], 'iter': [0, 1]},
                                  'val': {'acc': [0.6, 0.6], 'iter': [1, 2]}}
    records.save(str(tmp_path / "history.json"))
    loaded = Records(json.loads((tmp_path / "history.json").read_text()))
    assert loaded.state_dict() == records.state_dict()
    loaded.add_train_loss(0.1)
    assert len(records.loss_record['train']['loss']) == 4  # Records(state) copies
