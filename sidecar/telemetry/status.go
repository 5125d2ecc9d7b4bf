package telemetry

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Status is what `skiff mount --supervise --status-file` reports about
// its mount.
type Status struct {
	// PID is the supervisor's process id.
	PID int `json:"pid"`
	// WorkerPID is the current worker's (0 while none runs).
	WorkerPID int `json:"workerPID"`
	// WorkerVersion is the version the current worker reported.
	WorkerVersion string `json:"workerVersion"`
	// Generation counts the workers started: 1 for the first; it grows
	// with every restart and upgrade.
	Generation int `json:"generation"`
	// Mountpoint is the supervised mount point.
	Mountpoint string `json:"mountpoint"`
}

// WriteStatus replaces the file at path with st, atomically.
func WriteStatus(path string, st Status) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("status file: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("status file: %w", err)
	}
	return nil
}

// ReadStatus reads a status file WriteStatus wrote.
func ReadStatus(path string) (Status, error) {
	var st Status
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("status file %s: %w", path, err)
	}
	return st, nil
}
