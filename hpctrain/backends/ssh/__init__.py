"""The SSH backend, split by concern: `connection` (target, host keys, commands), `sftp` and
`rsync` (file transfer), `transport` (the FileTransport built on them)."""
