"""Structure-from-motion with pycolmap: features, matching, mapping, undistortion, sparse depth, checks."""
