"""The paper's central experiment at CPU scale."""
