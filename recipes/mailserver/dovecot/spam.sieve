# Global Sieve rule (before each user's own script): rspamd marks spam with "X-Spam: Yes".
require ["fileinto"];
if header :is "X-Spam" "Yes" {
    fileinto "Junk";
    stop;
}
