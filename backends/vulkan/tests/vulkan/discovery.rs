//! Discovery without a driver: the test re-runs itself in a child process whose Vulkan
//! loader is pointed at a driver file that does not exist, and the child checks that
//! `discover()` says so in words (runs on every machine, GPU or not).

use std::process::Command;

const CHILD: &str = "MAGPIE_VK_TEST_CHILD";

#[test]
fn without_a_driver_discovery_says_why() {
    if std::env::var_os(CHILD).is_some() {
        let e = magpie_vulkan::discover().expect_err("no driver, no device");
        let msg = e.to_string();
        assert!(msg.starts_with("no Vulkan driver: "), "{msg}");
        assert!(!msg.contains("non-validation"), "{msg}");
        println!("child saw: {msg}");
        return;
    }
    let missing = "/nonexistent/magpie-no-such-icd.json";
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "discovery::without_a_driver_discovery_says_why",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("VK_DRIVER_FILES", missing)
        .env("VK_ICD_FILENAMES", missing)
        .output()
        .expect("re-run the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("child saw: no Vulkan driver: "), "{text}");
}
