"""Evaluation: fusion metrics (``metrics``), scoring folders of fused images (``scoring``), the fusion methods
compared (``methods``), comparison reports (``report``) and warm-object contrast (``warm_objects``)."""
