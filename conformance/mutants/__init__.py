"""Deliberately broken implementations, each built to break named requirements."""
