fn main() {
    print!("{}", azs_csp_operator::crd::all_yaml().unwrap());
}
