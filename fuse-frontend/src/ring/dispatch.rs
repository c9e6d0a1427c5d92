//! Decodes ring requests (written on main).
