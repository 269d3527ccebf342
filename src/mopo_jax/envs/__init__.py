"""The environments: catalogue of names and reference scores, termination rules, MOPO's OOD tasks,
and real-env evaluation."""
