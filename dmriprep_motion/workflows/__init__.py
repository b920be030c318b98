"""Nipype workflows of dmriprep_motion."""
