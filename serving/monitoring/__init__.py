"""Closing the loop: did the scores come true, has the population drifted, did outreach work.

- `outcomes`: what happened to each stored score's customer after its as_of;
- `quality`: realized churn and value metrics by model version and scoring week;
- `stability`: population stability of features and score against the bundle's reference;
- `verdict`: whether to retrain, and why, from the two above;
- `monitor`: the run that puts them together (`churnlens monitor`);
- `effect`: treated against control for each outreach rule (`churnlens outreach effect`);
- `store`, `tracking`, `prometheus`: where results go (the outbox database, MLflow, /metrics);
- `cli`: the ``churnlens monitor`` command; `report_view`: the report's section.
"""
