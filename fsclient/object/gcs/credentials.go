package gcs

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
)

// Google's OAuth and STS endpoints: the only token endpoints restricted
// credentials may name.
var (
	googleTokenURLs = []string{
		"https://oauth2.googleapis.com/token",
		"https://accounts.google.com/o/oauth2/token",
		"https://www.googleapis.com/oauth2/v4/token",
	}
	stsTokenURL = "https://sts.googleapis.com/v1/token"
	// TokenFileDirs hold the projected service-account tokens that an
	// external_account's credential_source.file may name.
	TokenFileDirs = []string{"/var/run/secrets", "/run/secrets"}
)

// credentialsFile holds the fields of a credentials file that say where
// the auth library reads from and sends to.
type credentialsFile struct {
	Type                           string          `json:"type"`
	TokenURI                       string          `json:"token_uri"`
	TokenURL                       string          `json:"token_url"`
	TokenInfoURL                   string          `json:"token_info_url"`
	ServiceAccountImpersonationURL string          `json:"service_account_impersonation_url"`
	CredentialSource               json.RawMessage `json:"credential_source"`
	SourceCredentials              json.RawMessage `json:"source_credentials"`
	UniverseDomain                 string          `json:"universe_domain"`
}

type credentialSource struct {
	File                        *string         `json:"file"`
	URL                         *string         `json:"url"`
	Executable                  json.RawMessage `json:"executable"`
	EnvironmentID               *string         `json:"environment_id"`
	RegionURL                   *string         `json:"region_url"`
	RegionalCredVerificationURL *string         `json:"regional_cred_verification_url"`
	IMDSv2SessionTokenURL       *string         `json:"imdsv2_session_token_url"`
	Certificate                 json.RawMessage `json:"certificate"`
	Headers                     json.RawMessage `json:"headers"`
}

// CheckCredentials applies the rules of restricted mode (Config.Restricted)
// to a Google credentials JSON file, so that a privileged process never
// reads a file or sends a token to a place the file's author chose:
//
//   - service_account and authorized_user: token_uri absent or one of
//     Google's OAuth token endpoints;
//   - external_account: credential_source is a file (a projected
//     service-account token) under /var/run/secrets or /run/secrets, with
//     no url, executable, environment or certificate source; token_url
//     exactly https://sts.googleapis.com/v1/token; no token_info_url;
//     service_account_impersonation_url, if any, on
//     https://iamcredentials.googleapis.com/;
//   - impersonated_service_account: service_account_impersonation_url on
//     iamcredentials.googleapis.com, and source_credentials that pass these
//     rules (and are not themselves impersonated);
//   - any other type is refused.
//
// The error names the rule broken, never the file's contents.
func CheckCredentials(data []byte) error {
	if err := checkCredentials(data, 0); err != nil {
		return fmt.Errorf("refused in restricted mode: %w", err)
	}
	return nil
}

func checkCredentials(data []byte, depth int) error {
	var f credentialsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return errors.New("not a JSON credentials file")
	}
	if f.UniverseDomain != "" && f.UniverseDomain != "googleapis.com" {
		return errors.New("universe_domain must be googleapis.com")
	}
	switch f.Type {
	case "service_account", "authorized_user":
		if f.TokenURI != "" && !oneOf(f.TokenURI, googleTokenURLs) {
			return fmt.Errorf("%s token_uri must be Google's OAuth endpoint %s", f.Type, googleTokenURLs[0])
		}
		return nil
	case "external_account":
		if f.TokenURL != stsTokenURL {
			return fmt.Errorf("external_account token_url must be exactly %s", stsTokenURL)
		}
		if f.TokenInfoURL != "" {
			return errors.New("external_account must not set token_info_url")
		}
		if err := checkImpersonationURL(f.ServiceAccountImpersonationURL, true); err != nil {
			return fmt.Errorf("external_account %w", err)
		}
		return checkSource(f.CredentialSource)
	case "impersonated_service_account":
		if err := checkImpersonationURL(f.ServiceAccountImpersonationURL, false); err != nil {
			return fmt.Errorf("impersonated_service_account %w", err)
		}
		if depth > 0 {
			return errors.New("impersonated_service_account source_credentials must not be impersonated again")
		}
		if len(f.SourceCredentials) == 0 {
			return errors.New("impersonated_service_account needs source_credentials")
		}
		if err := checkCredentials(f.SourceCredentials, depth+1); err != nil {
			return fmt.Errorf("impersonated_service_account source_credentials: %w", err)
		}
		return nil
	case "":
		return errors.New("no type field")
	default:
		return errors.New("type must be service_account, authorized_user, external_account or impersonated_service_account")
	}
}

// checkImpersonationURL accepts "" (when optional) or an https URL on
// iamcredentials.googleapis.com.
func checkImpersonationURL(s string, optional bool) error {
	const rule = "service_account_impersonation_url must be https://iamcredentials.googleapis.com/..."
	if s == "" {
		if optional {
			return nil
		}
		return errors.New(rule)
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host != "iamcredentials.googleapis.com" || u.User != nil {
		return errors.New(rule)
	}
	return nil
}

// checkSource accepts only a token file under TokenFileDirs.
func checkSource(raw json.RawMessage) error {
	var s credentialSource
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return errors.New("external_account needs a credential_source object with a file")
	}
	switch {
	case s.URL != nil:
		return errors.New("external_account credential_source.url is not allowed (only a projected token file)")
	case len(s.Executable) > 0:
		return errors.New("external_account credential_source.executable is not allowed (only a projected token file)")
	case s.EnvironmentID != nil || s.RegionURL != nil || s.RegionalCredVerificationURL != nil || s.IMDSv2SessionTokenURL != nil:
		return errors.New("external_account environment (AWS) sources are not allowed (only a projected token file)")
	case len(s.Certificate) > 0:
		return errors.New("external_account credential_source.certificate is not allowed (only a projected token file)")
	case len(s.Headers) > 0:
		return errors.New("external_account credential_source.headers is not allowed")
	case s.File == nil || *s.File == "":
		return errors.New("external_account credential_source.file is required")
	}
	const rule = "external_account credential_source.file must be a projected service-account token under /var/run/secrets or /run/secrets"
	if !underTokenDir(*s.File) {
		return errors.New(rule)
	}
	// A symlink inside the directory must not lead out of it.
	if real, err := filepath.EvalSymlinks(*s.File); err == nil && !underTokenDir(real) {
		return errors.New(rule)
	}
	return nil
}

func underTokenDir(p string) bool {
	if !filepath.IsAbs(p) {
		return false
	}
	p = filepath.Clean(p)
	for _, d := range TokenFileDirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

func oneOf(s string, list []string) bool {
	for _, v := range list {
		if s == v {
			return true
		}
	}
	return false
}
